import QConvKit

/// The text of a verification report: the per-tensor table, the summary,
/// and one stderr line per failure. `verify` and `to-* --verify` print it.
enum VerificationText {
    static func table(_ report: VerificationReport) -> String {
        var rows = [["TENSOR", "SCHEME", "ELEMENTS", "MAX_ABS_ERR", "RMSE", "REL_RMSE", "SQNR_DB", "COSINE", ""]]
        for tensor in report.tensors {
            var row = [tensor.name, tensor.scheme]
            if let m = tensor.metrics {
                row += [Format.grouped(m.elementCount), Format.number(m.maxAbsoluteError), Format.number(m.rmse), Format.number(m.relativeRMSE),
                        decibels(m.sqnrDecibels), Format.fixed(m.cosineSimilarity, 6)]
            } else {
                row += [Format.grouped(tensor.shape.reduce(1, *)), "-", "-", "-", "-", "-"]
            }
            if let identical = tensor.identical { row.append(identical ? "identical" : "DIFFERS") }
            else { row.append(tensor.violations.isEmpty ? "" : "FAIL") }
            rows.append(row)
        }
        return Format.table(rows, rightAligned: [2, 3, 4, 5, 6, 7])
    }

    static func summary(_ report: VerificationReport) -> String {
        let o = report.overall
        return Format.table([
            ["verified", "\(report.converted) against \(report.original)"],
            ["tensors", "\(report.tensors.count): \(report.approximatedTensorCount) approximated, \(report.identicalTensorCount) identical"],
            ["overall", "rel RMSE \(Format.number(o.relativeRMSE)), SQNR \(decibels(o.sqnrDecibels)) dB, cosine \(Format.fixed(o.cosineSimilarity, 6)), max abs err \(Format.number(o.maxAbsoluteError)), RMSE \(Format.number(o.rmse)) over \(Format.grouped(o.elementCount)) elements"],
            ["result", report.failures.isEmpty ? "passed" : "FAILED: \(report.failures.count) tensor\(report.failures.count == 1 ? "" : "s") out of bounds"],
        ])
    }

    /// An SQNR for the text report: two decimals, or `inf` (an exact match),
    /// `-inf` (an all-zero original with an error) and `nan` (a NaN or
    /// infinity reached the sums), whatever the NaN's sign.
    static func decibels(_ value: Double) -> String {
        if value.isNaN { return "nan" }
        if value.isInfinite { return value > 0 ? "inf" : "-inf" }
        return Format.fixed(value, 2)
    }

    /// One stderr line per failing tensor, so CI logs show what broke.
    static func reportFailures(_ report: VerificationReport) {
        for tensor in report.failures {
            Console.error("\(report.converted): tensor '\(tensor.name)': \(tensor.violations.joined(separator: "; "))")
        }
    }
}
