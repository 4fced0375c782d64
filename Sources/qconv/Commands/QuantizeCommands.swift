import QConvKit

/// Options every quantizing command shares (`to-nf4`, `to-fp4`, `to-int8`).
enum QuantizeOptions {
    static let selection: [OptionSpec] = [
        .flag("--all", "Quantize every floating-point tensor (default: rank >= 2, except embeddings, lm_head and norms)."),
        .value("--only", "REGEX", "Quantize only float tensors whose name matches.", repeatable: true),
        .value("--skip", "REGEX", "Keep tensors whose name matches unquantized.", repeatable: true),
        .flag("--allow-nonfinite", "Quantize tensors holding NaN or Inf instead of refusing them."),
        .flag("--verify", "Check the round trip after writing and print its summary (takes the verify thresholds)."),
    ]
    static let common: [OptionSpec] = [CommonOptions.threads, CommonOptions.json, CommonOptions.quiet, CommonOptions.force]

    static func positionals(_ what: String) -> [(name: String, help: String)] {
        [("IN", "A .safetensors file or a model folder (sharded or not)."), ("OUT", "The \(what) container to write.")]
    }

    static let selectionHelp = """
        Tensors not selected are stored as they are and come back bit-identical. \
        --only replaces the default choice; --skip is applied last.
        """

    /// Runs a conversion with `method` and prints its report.
    static func run(_ arguments: ParsedArguments, console: Console, method: QuantizationMethod) throws -> Int32 {
        let input = arguments.positionals[0]
        let output = arguments.positionals[1]
        let selection = try TensorSelection(all: arguments.flag("--all"), only: arguments.values("--only"), skip: arguments.values("--skip"))
        let thresholds = try VerifyThresholds.parse(arguments)
        if thresholds.isActive && !arguments.flag("--verify") {
            throw arguments.usageError("verify thresholds need --verify")
        }
        let options = QuantizationOptions(method: method, selection: selection, threads: try arguments.threads(),
                                          allowNonfinite: arguments.flag("--allow-nonfinite"),
                                          overwrite: arguments.flag("--force"), quiet: arguments.flag("--quiet") || arguments.flag("--json"))
        let checkpoint = try Checkpoint(path: input)
        let report = try Quantizer.convert(checkpoint, to: output, options: options)
        var verification: VerificationReport?
        if arguments.flag("--verify") {
            verification = try RoundTripVerifier.compare(original: checkpoint, converted: try ConvertedCheckpoint(path: output),
                                                         options: .init(thresholds: thresholds.values, threads: options.threads, quiet: options.quiet))
        }
        if arguments.flag("--json") {
            var json = report.json
            if let verification, case .object(var object) = json {
                object.append("verify", verification.json(includeTensors: false))
                json = .object(object)
            }
            console.printJSON(json)
        } else {
            console.say(render(report))
            if let verification { console.say("\n" + VerifyCommand.renderSummary(verification)) }
        }
        if let verification, !verification.failures.isEmpty {
            if !arguments.flag("--json") { VerifyCommand.reportFailures(verification) }
            return 1
        }
        return 0
    }

    static func render(_ report: ConversionReport) -> String {
        var method = report.method.scheme.rawValue
        switch report.method {
        case let .fourBit(_, blockSize, doubleQuant): method += ", block size \(blockSize)" + (doubleQuant ? ", double quant" : "")
        case let .int8(outliers): method += ", outliers: \(outliers)"
        }
        let quantized = report.quantized
        var rows: [[String]] = [
            ["wrote", report.output],
            ["method", method],
            ["tensors", "\(report.tensors.count) (\(quantized.count) quantized, \(report.tensors.count - quantized.count) kept as they were)"],
            ["parameters", "\(Format.grouped(report.quantizedParameterCount)) quantized of \(Format.grouped(report.parameterCount))"],
            ["size", "\(Format.bytes(report.sourceBytes)) -> \(Format.bytes(report.outputBytes)) (\(Format.fixed(report.sourceBytes > 0 ? Double(report.outputBytes) * 100 / Double(report.sourceBytes) : 0, 1))%)"],
            ["bits/weight", "\(Format.fixed(report.quantizedBitsPerWeight, 3)) over quantized tensors"],
        ]
        if case .int8 = report.method {
            let counts = report.outlierColumnCounts
            rows.append(["outliers", "\(counts.outliers) of \(counts.columns) columns kept in FP16"])
        }
        if !report.embeddedFiles.isEmpty { rows.append(["files", report.embeddedFiles.joined(separator: ", ")]) }
        rows.append(["time", "\(Format.fixed(report.seconds, 2)) s"])
        return Format.table(rows)
    }
}

extension FourBitOptions {
    /// The spec of `to-nf4` or `to-fp4`: the same options, another codebook.
    static func spec(_ format: FourBitFormat, abstract: String) -> CommandSpec {
        CommandSpec(name: "to-\(format.rawValue)", abstract: abstract,
                    positionals: QuantizeOptions.positionals(format.rawValue.uppercased()),
                    options: options + QuantizeOptions.selection + VerifyThresholds.options + QuantizeOptions.common,
                    discussion: QuantizeOptions.selectionHelp)
    }
}

/// `qconv to-nf4 IN OUT`.
enum ToNF4Command: Command {
    static let spec = FourBitOptions.spec(.nf4, abstract: "Quantize to 4-bit NormalFloat (QLoRA) with double-quantized block constants.")

    static func run(_ arguments: ParsedArguments, console: Console) throws -> Int32 {
        try QuantizeOptions.run(arguments, console: console, method: try FourBitOptions.method(.nf4, arguments))
    }
}

/// `qconv to-fp4 IN OUT`.
enum ToFP4Command: Command {
    static let spec = FourBitOptions.spec(.fp4, abstract: "Quantize to 4-bit float (bitsandbytes FP4) with double-quantized block constants.")

    static func run(_ arguments: ParsedArguments, console: Console) throws -> Int32 {
        try QuantizeOptions.run(arguments, console: console, method: try FourBitOptions.method(.fp4, arguments))
    }
}

enum FourBitOptions {
    static let options: [OptionSpec] = [
        .value("--block-size", "N", "Elements per block: 32, 64 (default), 128, ..., 4096."),
        .flag("--no-double-quant", "Store block absmax values as float32 instead of double-quantizing them."),
    ]

    static func method(_ format: FourBitFormat, _ arguments: ParsedArguments) throws -> QuantizationMethod {
        let blockSize = try arguments.integer("--block-size", in: 1...Int.max) ?? 64
        guard Blockwise4Bit.supportedBlockSizes.contains(blockSize) else {
            throw arguments.usageError("--block-size must be one of \(Blockwise4Bit.supportedBlockSizes.map(String.init).joined(separator: ", ")), got \(blockSize)")
        }
        return .fourBit(format, blockSize: blockSize, doubleQuant: !arguments.flag("--no-double-quant"))
    }
}

/// `qconv to-int8 IN OUT`.
enum ToInt8Command: Command {
    static let spec = CommandSpec(
        name: "to-int8",
        abstract: "Quantize to row-wise int8 with outlier columns kept in FP16 (LLM.int8).",
        positionals: QuantizeOptions.positionals("INT8"),
        options: [
            .value("--outlier-threshold", "T", "bitsandbytes' absolute rule: a column with any |w| >= T is an outlier; 0 means none."),
            .value("--outlier-rms-multiple", "K", "A column whose largest |w| is >= K x the tensor's RMS is an outlier (the default rule, K = 10); 0 means none."),
        ] + QuantizeOptions.selection + VerifyThresholds.options + QuantizeOptions.common,
        discussion: QuantizeOptions.selectionHelp
    )

    static func run(_ arguments: ParsedArguments, console: Console) throws -> Int32 {
        var outliers = OutlierCriterion.default
        if arguments.value("--outlier-threshold") != nil && arguments.value("--outlier-rms-multiple") != nil {
            throw arguments.usageError("give --outlier-threshold or --outlier-rms-multiple, not both")
        }
        if let threshold = try arguments.number("--outlier-threshold") {
            guard threshold >= 0 else { throw arguments.usageError("--outlier-threshold must be >= 0") }
            outliers = threshold == 0 ? .none : .absolute(Float(threshold))
        }
        if let multiple = try arguments.number("--outlier-rms-multiple") {
            guard multiple >= 0 else { throw arguments.usageError("--outlier-rms-multiple must be >= 0") }
            outliers = multiple == 0 ? .none : .relativeToRMS(Float(multiple))
        }
        return try QuantizeOptions.run(arguments, console: console, method: .int8(outliers: outliers))
    }
}
