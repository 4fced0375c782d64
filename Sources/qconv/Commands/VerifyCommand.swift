import QConvKit

/// The threshold options of `verify` (and of `--verify` on the quantizing commands).
struct VerifyThresholds {
    static let options: [OptionSpec] = [
        .value("--max-rel-rmse", "X", "Fail (exit 1) when a tensor's RMSE / RMS(original) exceeds X."),
        .value("--min-sqnr", "DB", "Fail when a tensor's signal-to-quantization-noise ratio is below DB decibels."),
        .value("--max-abs-err", "X", "Fail when a tensor's largest absolute error exceeds X."),
        .value("--min-cosine", "X", "Fail when a tensor's cosine similarity is below X."),
    ]

    var values: VerificationThresholds
    var isActive: Bool { values.maxRelativeRMSE != nil || values.minSQNR != nil || values.maxAbsoluteError != nil || values.minCosine != nil }

    static func parse(_ arguments: ParsedArguments) throws -> VerifyThresholds {
        VerifyThresholds(values: VerificationThresholds(
            maxRelativeRMSE: try arguments.number("--max-rel-rmse"), minSQNR: try arguments.number("--min-sqnr"),
            maxAbsoluteError: try arguments.number("--max-abs-err"), minCosine: try arguments.number("--min-cosine")))
    }
}

/// `qconv verify ORIGINAL CONVERTED` and `qconv verify CONTAINER`.
enum VerifyCommand: Command {
    static let spec = CommandSpec(
        name: "verify",
        abstract: "Measure how much a conversion changed each tensor, or check a container's integrity.",
        positionals: [
            ("ORIGINAL", "The source checkpoint (file or model folder); alone, a container to check for integrity."),
            ("CONVERTED", "A qconv container or a safetensors checkpoint to compare with ORIGINAL."),
        ],
        optionalPositionals: 1,
        options: VerifyThresholds.options + [
            .value("--only", "REGEX", "Compare only tensors whose name matches.", repeatable: true),
            .flag("--tensors", "With --json, include every tensor's metrics (the text report always lists them)."),
            CommonOptions.threads, CommonOptions.json, CommonOptions.quiet,
        ],
        discussion: """
            Metrics per tensor: max absolute error, RMSE, relative RMSE (RMSE / RMS of the original), SQNR in dB, \
            cosine similarity. Overall figures are weighted by element count over the tensors that were approximated. \
            Tensors stored raw must be identical. Exit 1 when any tensor breaks a threshold; 3 when the inputs \
            do not match (missing tensor, other shape) or a checksum fails.
            """
    )

    static func run(_ arguments: ParsedArguments, console: Console) throws -> Int32 {
        if arguments.positionals.count == 1 {
            // An integrity check compares nothing: options that shape a comparison would be ignored.
            if try VerifyThresholds.parse(arguments).isActive || !arguments.values("--only").isEmpty || arguments.flag("--tensors") {
                throw arguments.usageError("thresholds, --only and --tensors need ORIGINAL and CONVERTED; a single CONTAINER gets an integrity check")
            }
            let report = try IntegrityCheck.check(try ContainerFile(path: arguments.positionals[0]))
            if arguments.flag("--json") {
                console.printJSON(report.json)
            } else {
                console.say("\(report.path): ok: \(report.tensorCount) tensors, \(report.partCount) parts, \(report.fileCount) embedded files, \(Format.grouped(report.bytesChecked)) bytes checked")
            }
            return 0
        }
        let thresholds = try VerifyThresholds.parse(arguments)
        let report = try RoundTripVerifier.compare(
            original: try Checkpoint(path: arguments.positionals[0]), converted: try ConvertedCheckpoint(path: arguments.positionals[1]),
            options: .init(thresholds: thresholds.values, only: arguments.values("--only"), threads: try arguments.threads(),
                           quiet: arguments.flag("--quiet") || arguments.flag("--json")))
        if arguments.flag("--json") {
            console.printJSON(report.json(includeTensors: arguments.flag("--tensors")))
        } else {
            console.say(renderTable(report) + "\n\n" + renderSummary(report))
        }
        guard report.failures.isEmpty else {
            if !arguments.flag("--json") { reportFailures(report) }
            return 1
        }
        return 0
    }

    static func renderTable(_ report: VerificationReport) -> String {
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

    static func renderSummary(_ report: VerificationReport) -> String {
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
