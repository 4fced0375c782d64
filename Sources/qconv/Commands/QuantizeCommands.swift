import QConvCommandLine
import QConvKit

/// What `to-nf4`, `to-fp4` and `to-int8` share: the selection, verification
/// and common options, and the run itself (convert, verify if asked, report).
struct QuantizeOptions: CommandOptions {
    static let allFlag = Flag("--all", "Quantize every floating-point tensor (default: rank >= 2, except embeddings, lm_head and norms).")
    static let onlyOption = Option<String>("--only", "REGEX", "Quantize only float tensors whose name matches.", repeatable: true)
    static let skipOption = Option<String>("--skip", "REGEX", "Keep tensors whose name matches unquantized.", repeatable: true)
    static let allowNonfiniteFlag = Flag("--allow-nonfinite", "Quantize tensors holding NaN or Inf instead of refusing them.")
    static let verifyFlag = Flag("--verify", "Check the round trip after writing and print its summary (takes the verify thresholds).")

    static let selection = [allFlag.spec, onlyOption.spec, skipOption.spec, allowNonfiniteFlag.spec, verifyFlag.spec]
    static let common = [CommonOptions.threads, CommonOptions.json, CommonOptions.quiet, OutputOptions.force]

    static func positionals(_ what: String) -> [(name: String, help: String)] {
        [("IN", "A .safetensors file, a PyTorch .bin, or a model folder (sharded or not)."), ("OUT", "The \(what) container to write.")]
    }

    static let selectionHelp = """
        Tensors not selected are stored as they are and come back bit-identical. \
        --only replaces the default choice; --skip is applied last.
        """

    let input: String
    let output: String
    let method: QuantizationMethod
    let selection: TensorSelection
    let allowNonfinite: Bool
    /// nil: no verification after writing.
    let verification: VerificationThresholds?
    let force: Bool
    let common: CommonOptions

    /// Reads the shared options; `method` comes from the command's own.
    init(_ arguments: ParsedArguments, method: QuantizationMethod) throws {
        input = arguments.positionals[0]
        output = arguments.positionals[1]
        self.method = method
        selection = try TensorSelection(all: arguments[Self.allFlag], only: try arguments.values(Self.onlyOption),
                                        skip: try arguments.values(Self.skipOption))
        allowNonfinite = arguments[Self.allowNonfiniteFlag]
        let thresholds = try VerifyThresholds(arguments)
        if thresholds.isActive && !arguments[Self.verifyFlag] { throw arguments.usageError("verify thresholds need --verify") }
        verification = arguments[Self.verifyFlag] ? thresholds.values : nil
        force = arguments[OutputOptions.forceFlag]
        common = try CommonOptions(arguments)
    }

    /// Converts, verifies when asked, and prints the report.
    func run(console: Console) throws -> Int32 {
        let source = try Model.open(input)
        let report = try Quantizer.convert(source, to: output, options: .init(
            method: method, selection: selection, threads: common.threads, allowNonfinite: allowNonfinite, overwrite: force, progress: common.progress))
        let verified = try verification.map { thresholds in
            try RoundTripVerifier.compare(original: source, converted: try Model.open(output),
                                          options: .init(thresholds: thresholds, threads: common.threads, progress: common.progress))
        }
        if common.json {
            var json = report.json
            if let verified, case .object(var object) = json {
                object.append("verify", verified.json(includeTensors: false))
                json = .object(object)
            }
            console.printJSON(json)
        } else {
            console.say(Self.render(report))
            if let verified { console.say("\n" + VerificationText.summary(verified)) }
        }
        if let verified, !verified.failures.isEmpty {
            if !common.json { VerificationText.reportFailures(verified) }
            return 1
        }
        return 0
    }

    static func render(_ report: ConversionReport) -> String {
        var method = report.method.schemeName
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

/// `to-nf4` and `to-fp4`: the same options, another codebook.
enum FourBitOptions {
    static let blockSizeOption = Option<Int>("--block-size", "N", "Elements per block: 32, 64 (default), 128, ..., 4096.", in: 1...Int.max)
    static let noDoubleQuantFlag = Flag("--no-double-quant", "Store block absmax values as float32 instead of double-quantizing them.")

    static func spec(_ format: FourBitFormat, abstract: String) -> CommandSpec {
        CommandSpec(name: "to-\(format.rawValue)", abstract: abstract,
                    positionals: QuantizeOptions.positionals(format.rawValue.uppercased()),
                    options: [blockSizeOption.spec, noDoubleQuantFlag.spec] + QuantizeOptions.selection + VerifyThresholds.options + QuantizeOptions.common,
                    discussion: QuantizeOptions.selectionHelp)
    }

    static func parse(_ format: FourBitFormat, _ arguments: ParsedArguments) throws -> QuantizeOptions {
        let blockSize = try arguments.value(blockSizeOption) ?? 64
        guard Blockwise4Bit.supportedBlockSizes.contains(blockSize) else {
            throw arguments.usageError("--block-size must be one of \(Blockwise4Bit.supportedBlockSizes.map(String.init).joined(separator: ", ")), got \(blockSize)")
        }
        return try QuantizeOptions(arguments, method: .fourBit(format, blockSize: blockSize, doubleQuant: !arguments[noDoubleQuantFlag]))
    }
}

/// `qconv to-nf4 IN OUT`.
enum ToNF4Command: Command {
    static let spec = FourBitOptions.spec(.nf4, abstract: "Quantize to 4-bit NormalFloat (QLoRA) with double-quantized block constants.")
    static func parse(_ arguments: ParsedArguments) throws -> QuantizeOptions { try FourBitOptions.parse(.nf4, arguments) }
    static func run(_ options: QuantizeOptions, console: Console) throws -> Int32 { try options.run(console: console) }
}

/// `qconv to-fp4 IN OUT`.
enum ToFP4Command: Command {
    static let spec = FourBitOptions.spec(.fp4, abstract: "Quantize to 4-bit float (bitsandbytes FP4) with double-quantized block constants.")
    static func parse(_ arguments: ParsedArguments) throws -> QuantizeOptions { try FourBitOptions.parse(.fp4, arguments) }
    static func run(_ options: QuantizeOptions, console: Console) throws -> Int32 { try options.run(console: console) }
}

/// `qconv to-int8 IN OUT`.
enum ToInt8Command: Command {
    static let thresholdOption = Option<Double>("--outlier-threshold", "T",
                                                "bitsandbytes' absolute rule: a column with any |w| >= T is an outlier; 0 means none.",
                                                expected: "a number >= 0", allowing: { $0 >= 0 })
    static let rmsMultipleOption = Option<Double>("--outlier-rms-multiple", "K",
                                                  "A column whose largest |w| is >= K x the tensor's RMS is an outlier (the default rule, K = 10); 0 means none.",
                                                  expected: "a number >= 0", allowing: { $0 >= 0 })

    static let spec = CommandSpec(
        name: "to-int8",
        abstract: "Quantize to row-wise int8 with outlier columns kept in FP16 (LLM.int8).",
        positionals: QuantizeOptions.positionals("INT8"),
        options: [thresholdOption.spec, rmsMultipleOption.spec] + QuantizeOptions.selection + VerifyThresholds.options + QuantizeOptions.common,
        discussion: QuantizeOptions.selectionHelp
    )

    static func parse(_ arguments: ParsedArguments) throws -> QuantizeOptions {
        let threshold = try arguments.value(thresholdOption), multiple = try arguments.value(rmsMultipleOption)
        var outliers = OutlierCriterion.default
        switch (threshold, multiple) {
        case (.some, .some): throw arguments.usageError("give --outlier-threshold or --outlier-rms-multiple, not both")
        case let (.some(t), nil): outliers = t == 0 ? .none : .absolute(Float(t))
        case let (nil, .some(k)): outliers = k == 0 ? .none : .relativeToRMS(Float(k))
        case (nil, nil): break
        }
        return try QuantizeOptions(arguments, method: .int8(outliers: outliers))
    }

    static func run(_ options: QuantizeOptions, console: Console) throws -> Int32 { try options.run(console: console) }
}
