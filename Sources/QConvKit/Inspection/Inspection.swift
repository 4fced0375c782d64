/// The entry point of `qconv inspect`: picks the reader by looking at the file.
public enum Inspection {
    public static func inspect(path: String, statistics: Bool, threads: Int) throws -> InspectionReport {
        let checkpoint = try Checkpoint(path: path)
        return try InspectionReport.inspect(checkpoint, statistics: statistics, threads: threads)
    }
}
