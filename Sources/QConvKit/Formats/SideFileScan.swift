/// Which files of a model folder travel with its weights: config.json,
/// tokenizer files, and the files of subfolders such as sentence-transformers'
/// `1_Pooling/config.json`, as paths relative to the folder.
///
/// Left out, silently: hidden files and folders, weights in any format and
/// their indexes (`Checkpoint.isAuxiliaryFileName`). Left out and listed, so
/// a report can say so: a previous qconv output found in the folder (by its
/// magic; it would grow every run) and files nested deeper than
/// `maximumDepth` folders. A named pipe, device or socket under a side file's
/// name is carried, so that reading it refuses it (`ReadableFile`) instead of
/// leaving it out.
public enum SideFileScan {
    /// Folders below the model folder whose files are carried (`a/b/file` is depth 2).
    public static let maximumDepth = 3

    /// A file that stays behind, and why.
    public struct LeftOut: Equatable, Sendable {
        public let name: String
        public let reason: String
    }

    /// The files to carry (sorted relative paths) and those left out.
    ///
    /// - Parameter weights: names at the top of the folder that are its weights (shards).
    public static func scan(_ folder: String, weights: Set<String>) throws -> (carried: [String], leftOut: [LeftOut]) {
        var carried: [String] = [], leftOut: [LeftOut] = []
        try visit(folder, relative: "", depth: 0, weights: weights, carried: &carried, leftOut: &leftOut)
        return (carried.sorted(), leftOut)
    }

    private static func visit(_ folder: String, relative: String, depth: Int, weights: Set<String>,
                              carried: inout [String], leftOut: inout [LeftOut]) throws {
        for name in try FileSystem.contents(of: FileSystem.join(folder, relative)) where !name.hasPrefix(".") {
            let path = relative.isEmpty ? name : relative + "/" + name
            guard depth > 0 || !weights.contains(name), Checkpoint.isAuxiliaryFileName(name) else { continue }
            switch FileSystem.kind(of: FileSystem.join(folder, path)) {
            case .directory:
                if depth < maximumDepth {
                    try visit(folder, relative: path, depth: depth + 1, weights: weights, carried: &carried, leftOut: &leftOut)
                } else {
                    leftOut.append(LeftOut(name: path + "/", reason: "nested deeper than \(maximumDepth) folders"))
                }
            case .file, .other:
                if isQConvOutput(FileSystem.join(folder, path)) {
                    leftOut.append(LeftOut(name: path, reason: "a qconv container (an earlier output)"))
                } else {
                    carried.append(path)
                }
            case .missing:
                continue
            }
        }
    }

    /// Whether the file starts with the container magic.
    static func isQConvOutput(_ path: String) -> Bool {
        guard let file = try? ReadableFile(path: path), file.size >= UInt64(ContainerFormat.magic.count) else { return false }
        return (try? file.readBytes(at: 0, count: ContainerFormat.magic.count)) == ContainerFormat.magic
    }
}
