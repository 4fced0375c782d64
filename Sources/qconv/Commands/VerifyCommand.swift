import QConvCommandLine
import QConvKit

/// The threshold options of `verify` (and of `--verify` on the quantizing commands).
struct VerifyThresholds {
    static let nonNegative: @Sendable (Double) -> Bool = { $0 >= 0 }
    static let maxRelativeRMSE = Option<Double>("--max-rel-rmse", "X", "Fail (exit 1) when a tensor's RMSE / RMS(original) exceeds X (per tensor).",
                                                expected: "a number >= 0", allowing: nonNegative)
    static let minSQNR = Option<Double>("--min-sqnr", "DB", "Fail when a tensor's signal-to-quantization-noise ratio is below DB decibels (per tensor).")
    static let maxAbsoluteError = Option<Double>("--max-abs-err", "X", "Fail when a tensor's largest absolute error exceeds X (per tensor).",
                                                 expected: "a number >= 0", allowing: nonNegative)
    static let minCosine = Option<Double>("--min-cosine", "X", "Fail when a tensor's cosine similarity is below X (per tensor).",
                                          expected: "a number in -1...1", allowing: { $0 >= -1 && $0 <= 1 })
    static let maxOverallRelativeRMSE = Option<Double>("--max-overall-rel-rmse", "X", "Fail when the relative RMSE over all approximated tensors exceeds X.",
                                                       expected: "a number >= 0", allowing: nonNegative)
    static let minOverallSQNR = Option<Double>("--min-overall-sqnr", "DB", "Fail when the SQNR over all approximated tensors is below DB decibels.")
    static let options = [maxRelativeRMSE.spec, minSQNR.spec, maxAbsoluteError.spec, minCosine.spec, maxOverallRelativeRMSE.spec, minOverallSQNR.spec]

    let values: VerificationThresholds
    var isActive: Bool { !values.isEmpty }

    init(_ arguments: ParsedArguments) throws {
        values = VerificationThresholds(maxRelativeRMSE: try arguments.value(Self.maxRelativeRMSE), minSQNR: try arguments.value(Self.minSQNR),
                                        maxAbsoluteError: try arguments.value(Self.maxAbsoluteError), minCosine: try arguments.value(Self.minCosine),
                                        maxOverallRelativeRMSE: try arguments.value(Self.maxOverallRelativeRMSE),
                                        minOverallSQNR: try arguments.value(Self.minOverallSQNR))
    }
}

/// `qconv verify ORIGINAL CONVERTED` and `qconv verify CONTAINER`.
enum VerifyCommand: Command {
    static let onlyOption = Option<String>("--only", "REGEX", "Compare only tensors whose name matches.", repeatable: true)
    static let tensorsFlag = Flag("--tensors", "List every tensor (the text report shows the 10 furthest from the original); with --json, include every tensor's metrics.")

    static let spec = CommandSpec(
        name: "verify",
        abstract: "Measure how much a conversion changed each tensor, or check one model's integrity.",
        positionals: [
            ("ORIGINAL", "The source checkpoint (safetensors or PyTorch .bin, file or model folder); alone, any model to check for integrity "
             + "(a bitsandbytes checkpoint: that transformers would load it)."),
            ("CONVERTED", "A qconv container or a checkpoint (safetensors or PyTorch .bin) to compare with ORIGINAL."),
        ],
        optionalPositionals: 1,
        options: VerifyThresholds.options + [onlyOption.spec, tensorsFlag.spec, CommonOptions.threads, CommonOptions.json, CommonOptions.quiet],
        discussion: """
            Metrics per tensor: max absolute error, RMSE, relative RMSE (RMSE / RMS of the original), SQNR in dB, \
            cosine similarity. Overall figures are weighted by element count over the tensors that were approximated. \
            Tensors stored raw must be identical. Exit 1 when a tensor breaks a per-tensor threshold or the overall \
            figures an overall one; 3 when the inputs do not match (missing tensor, other shape) or a checksum fails. \
            With one bitsandbytes checkpoint: one error line per problem (a weight's missing or extra pieces, its quant \
            state, its shards, config.json), exit 3 when there is one, 0 when transformers would load it.
            """,
        examples: [
            "qconv verify Samples/sharded_llama model-nf4.qc",
            "qconv verify model/ model-int8.qc --max-rel-rmse 0.01 --quiet",
            "qconv verify model-nf4.qc",
        ]
    )

    enum Mode {
        /// One container: its integrity.
        case integrity(String)
        /// Two models: how far the second is from the first.
        case comparison(original: String, converted: String, thresholds: VerificationThresholds, only: [String], includeTensors: Bool)
    }

    struct Options: CommandOptions {
        let mode: Mode
        let common: CommonOptions
    }

    static func parse(_ arguments: ParsedArguments) throws -> Options {
        let thresholds = try VerifyThresholds(arguments), only = try arguments.values(onlyOption), includeTensors = arguments[tensorsFlag]
        let common = try CommonOptions(arguments)
        guard arguments.positionals.count == 2 else {
            // An integrity check compares nothing: options that shape a comparison would be ignored.
            if thresholds.isActive || !only.isEmpty || includeTensors {
                throw arguments.usageError("thresholds, --only and --tensors need ORIGINAL and CONVERTED; a single model gets an integrity check")
            }
            return Options(mode: .integrity(arguments.positionals[0]), common: common)
        }
        return Options(mode: .comparison(original: arguments.positionals[0], converted: arguments.positionals[1], thresholds: thresholds.values,
                                         only: only, includeTensors: includeTensors), common: common)
    }

    /// `verify BNB`: every problem on its own error line (exit 3), or one line saying it loads.
    static func checkBitsandbytes(_ path: String, options: Options, console: Console) throws -> Int32 {
        let report = try BitsandbytesCheck.check(path: path)
        if options.common.json {
            console.printJSON(report.json)
        } else {
            for problem in report.problems { Console.error(problem.description) }
            if report.loads {
                let schemes = report.schemes.map { "\($0.scheme): \($0.count)" }.joined(separator: "; ")
                let files = "\(report.shardCount) shard\(report.shardCount == 1 ? "" : "s")"
                console.say("\(path): ok: \(report.tensorCount) tensors, \(files); quantized weights: \(schemes.isEmpty ? "none" : schemes)")
            }
        }
        return report.loads ? 0 : 3
    }

    static func run(_ options: Options, console: Console) throws -> Int32 {
        switch options.mode {
        case .integrity(let path):
            // A bitsandbytes checkpoint is checked from its pieces, so that every problem is listed, not the first.
            if case .bitsandbytes? = try Model.format(of: path) { return try checkBitsandbytes(path, options: options, console: console) }
            try checkIntegrity(of: try Model.open(path), console: console, json: options.common.json)
            return 0
        case let .comparison(original, converted, thresholds, only, includeTensors):
            let (originalModel, convertedModel) = (try Model.open(original), try Model.open(converted))
            if originalModel.format.storesQuantizedTensors && !convertedModel.format.storesQuantizedTensors {
                throw UsageError("\(original) is a \(originalModel.format.name) and \(converted) is not: ORIGINAL comes first, "
                                 + "then the CONVERTED model (the arguments look swapped)\nsee 'qconv verify --help'")
            }
            let report = try RoundTripVerifier.compare(original: originalModel, converted: convertedModel, options: .init(
                thresholds: thresholds, only: only, threads: options.common.threads, progress: options.common.progress))
            if options.common.json {
                console.printJSON(report.json(includeTensors: includeTensors))
            } else {
                console.say(VerificationText.table(report, all: includeTensors) + "\n\n" + VerificationText.summary(report))
            }
            guard report.passed else {
                if !options.common.json { VerificationText.reportFailures(report) }
                return 1
            }
            return 0
        }
    }

    /// One model, checked: a container's every checksum, padding and side part;
    /// a safetensors file or folder's headers, index and byte counts (what opening it checks).
    static func checkIntegrity(of model: Model, console: Console, json: Bool) throws {
        switch model.format {
        case .container:
            let report = try IntegrityCheck.check(try ContainerFile(path: model.path))
            if json {
                console.printJSON(report.json)
            } else {
                console.say("\(report.path): ok: \(report.tensorCount) tensors, \(report.partCount) parts, \(report.fileCount) embedded files, \(Format.grouped(report.bytesChecked)) bytes checked")
            }
        case .bitsandbytes:
            preconditionFailure("a bitsandbytes checkpoint is checked by checkBitsandbytes")
        case .safetensorsFile, .safetensorsFolder, .safetensorsShardedFolder, .pytorchFile, .pytorchFolder, .pytorchShardedFolder:
            // A PyTorch checkpoint's archive, pickle and views were checked when it was opened.
            let files = model.files.count
            if json {
                console.printJSON(.object(["path": .string(model.path), "format": .string(model.format.name), "ok": true,
                                           "tensor_count": .int(model.tensors.count), "file_count": .int(files),
                                           "tensor_bytes": .uint(model.sourceTensorBytes), "file_bytes": .uint(model.fileBytes)]))
            } else {
                console.say("\(model.path): ok: \(model.tensors.count) tensors in \(files) file\(files == 1 ? "" : "s"), "
                            + "\(Format.grouped(model.sourceTensorBytes)) bytes of tensor data accounted for (headers, index and sizes consistent)")
            }
        }
    }
}
