import QConvKit

/// The text of a verification report: the per-tensor table, the summary,
/// and one stderr line per failure. `verify` and `to-* --verify` print it.
enum VerificationText {
    /// Rows of the table when not every tensor is asked for.
    static let worstCount = 10

    /// The tensors (all, or the `worstCount` furthest from the original), a header on every column.
    static func table(_ report: VerificationReport, all: Bool) -> String {
        let shown = all ? report.tensors : report.worst(worstCount)
        var rows = [["TENSOR", "SCHEME", "ELEMENTS", "MAX_ABS_ERR", "RMSE", "REL_RMSE", "SQNR_DB", "COSINE", "STATUS"]]
        for tensor in shown {
            var row = [tensor.name, tensor.scheme]
            if let m = tensor.metrics {
                row += [Format.grouped(m.elementCount), Format.significant(m.maxAbsoluteError), Format.significant(m.rmse),
                        Format.significant(m.relativeRMSE), decibels(m.sqnrDecibels), Format.fixed(m.cosineSimilarity, 6)]
            } else {
                row += [Format.grouped(tensor.shape.reduce(1, *)), "-", "-", "-", "-", "-"]
            }
            row.append(status(tensor))
            rows.append(row)
        }
        var text = Format.table(rows, rightAligned: [2, 3, 4, 5, 6, 7])
        if shown.count < report.tensors.count {
            text += "\n(the \(shown.count) tensors furthest from the original, of \(report.tensors.count); --tensors lists every one)"
        }
        return text
    }

    static func status(_ tensor: VerificationReport.Tensor) -> String {
        if tensor.identical == false { return "DIFFERS" }
        if !tensor.violations.isEmpty { return "FAIL" }
        return tensor.isIdentical ? "identical" : "ok"
    }

    /// - Parameter kept: the output of a conversion whose check failed, which stays.
    static func summary(_ report: VerificationReport, kept: String? = nil) -> String {
        let o = report.overall
        var rows = [
            ["verified", "\(report.converted) against \(report.original)"],
            ["tensors", "\(report.tensors.count): \(report.approximatedTensorCount) approximated, \(report.identicalTensorCount) identical"],
            ["overall", "rel RMSE \(Format.significant(o.relativeRMSE)), SQNR \(decibels(o.sqnrDecibels)) dB, cosine \(Format.fixed(o.cosineSimilarity, 6)), "
                + "max abs err \(Format.significant(o.maxAbsoluteError)), RMSE \(Format.significant(o.rmse)) over \(Format.grouped(o.elementCount)) elements"],
            ["result", result(report)],
        ]
        if let kept, !report.passed { rows.append(["kept", "\(kept) (written; only its check failed)"]) }
        return Format.table(rows)
    }

    /// "passed", "passed (no thresholds set)", or what failed: how many
    /// tensors, per tensor, with the worst named; the overall figures.
    static func result(_ report: VerificationReport) -> String {
        guard !report.passed else { return report.thresholds.isEmpty ? "passed (no thresholds set)" : "passed" }
        var parts: [String] = []
        let failures = report.failures
        if let worst = report.worst(1).first, !failures.isEmpty {
            parts.append("\(failures.count) tensor\(failures.count == 1 ? "" : "s") out of bounds per tensor "
                         + "(worst: \(worst.name): \(worst.violations.joined(separator: ", ")))")
        }
        parts += report.overallViolations
        return "FAILED: " + parts.joined(separator: "; ")
    }

    /// An SQNR for the text report: two decimals, or `inf` (an exact match),
    /// `-inf` (an all-zero original with an error) and `nan` (a NaN or
    /// infinity reached the sums), whatever the NaN's sign.
    static func decibels(_ value: Double) -> String {
        if value.isNaN { return "nan" }
        if value.isInfinite { return value > 0 ? "inf" : "-inf" }
        return Format.fixed(value, 2)
    }

    /// One stderr line per failing tensor and per broken overall threshold, so CI logs show what broke.
    static func reportFailures(_ report: VerificationReport) {
        for tensor in report.failures {
            Console.error("\(report.converted): tensor '\(tensor.name)': \(tensor.violations.joined(separator: "; "))")
        }
        for violation in report.overallViolations {
            Console.error("\(report.converted): \(violation)")
        }
    }
}
