import QConvCommandLine
import QConvKit

/// The options `to-nf4`, `to-fp4` and `to-int8` share (selection,
/// verification, output, common), read once; each command adds its method's.
struct QuantizeOptions: CommandOptions {
    static let allFlag = Flag("--all", "Quantize every floating-point tensor (default: rank >= 2, except embeddings, lm_head and norms).")
    static let onlyOption = Option<String>("--only", "GLOB",
                                           "Quantize only the tensors of rank >= 2 (any rank with --all) whose whole name matches the glob "
                                           + "(*, ?, [a-z]; 're:REGEX' for a regular expression searched in the name).", repeatable: true)
    static let skipOption = Option<String>("--skip", "GLOB", "Keep the tensors whose name matches unquantized (a glob, or 're:REGEX').", repeatable: true)
    static let allowNonfiniteFlag = Flag("--allow-nonfinite", "Quantize tensors holding NaN or Inf instead of refusing them.")
    static let keepDTypeOption = Option<DType>("--keep-dtype", "T", "Store kept F32/F64 tensors (embeddings, norms, ...) as f16 or bf16.",
                                               expected: "f16 or bf16") { name in DType(commandLineName: name).flatMap { $0 == .f32 ? nil : $0 } }
    static let verifyFlag = Flag("--verify", "Check the round trip after writing and print its summary (takes the verify thresholds).")
    static let dryRunFlag = Flag("--dry-run", "Read the headers only and show what each tensor would become, and why, with the sizes; write nothing.")
    static let forceNameFlag = Flag("--force-name", "Write the container even under a name other tools take for their format (.safetensors, .bin, .gguf).")

    static let selection = [allFlag.spec, onlyOption.spec, skipOption.spec, allowNonfiniteFlag.spec, keepDTypeOption.spec, verifyFlag.spec,
                            dryRunFlag.spec]
    static let common = QuantizeOutputOptions.options + [PartOption.spec, CommonOptions.threads, CommonOptions.json, CommonOptions.quiet,
                                                         OutputOptions.force, forceNameFlag.spec]

    static func positionals(_ what: String) -> [(name: String, help: String)] {
        [("IN", "A .safetensors file, a PyTorch .bin or a model folder (sharded or not); or a container or bitsandbytes checkpoint quantized this way, laid out again."),
         ("OUT", "The \(what) container to write (with --format hf, the model folder; not needed with --dry-run).")]
    }

    static let selectionHelp = """
        Tensors not selected are stored as they are and come back bit-identical (or in the --keep-dtype). \
        --only narrows the default choice to the names it matches; --skip is applied last. A pattern that \
        matches no tensor is a usage error.
        """

    /// Extensions of the files other tools read, which a container must not pretend to be.
    static let foreignExtensions = [".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt"]

    let input: String
    /// nil: a dry run.
    let output: String?
    let method: QuantizationMethod
    let layout: Quantizer.Output
    let selection: TensorSelection
    let allowNonfinite: Bool
    let keepDType: DType?
    /// nil: no verification after writing.
    let verification: VerificationThresholds?
    let part: OutputPart?
    let force: Bool
    let common: CommonOptions

    /// Reads the shared options; `method` comes from the command's own.
    init(_ arguments: ParsedArguments, method: QuantizationMethod) throws {
        input = arguments.positionals[0]
        self.method = method
        layout = try QuantizeOutputOptions.parse(arguments)
        selection = try TensorSelection(all: arguments[Self.allFlag], only: try arguments.values(Self.onlyOption),
                                        skip: try arguments.values(Self.skipOption))
        allowNonfinite = arguments[Self.allowNonfiniteFlag]
        keepDType = try arguments.value(Self.keepDTypeOption)
        let thresholds = try VerifyThresholds(arguments)
        if thresholds.isActive && !arguments[Self.verifyFlag] { throw arguments.usageError("verify thresholds need --verify") }
        verification = arguments[Self.verifyFlag] ? thresholds.values : nil
        force = arguments[OutputOptions.forceFlag]
        common = try CommonOptions(arguments)
        part = try PartOption.resolve(arguments)
        if part != nil && layout == .container {
            throw arguments.usageError("--part writes shards of a model folder; a container is one file (pass --format hf)")
        }
        if arguments[Self.dryRunFlag] {
            if verification != nil { throw arguments.usageError("--dry-run writes nothing, so there is nothing to --verify") }
            output = nil
            return
        }
        guard arguments.positionals.count == 2 else { throw arguments.usageError("missing argument OUT (or pass --dry-run)") }
        let out = arguments.positionals[1]
        if layout == .container, !arguments[Self.forceNameFlag], let suffix = Self.foreignExtensions.first(where: { out.lowercased().hasSuffix($0) }) {
            throw arguments.usageError("\(out): a qconv container named \(suffix) would be taken for another format by other tools; "
                                       + "name it .qc, write a safetensors model folder with --format hf, or pass --force-name")
        }
        try PartOption.checkFolderOutput(part, output: out)
        output = out
    }

    var conversion: Quantizer.Options {
        Quantizer.Options(method: method, output: layout, selection: selection, threads: common.threads, allowNonfinite: allowNonfinite,
                          keepDType: keepDType, overwrite: force, progress: common.progress, part: part)
    }
}

/// `to-nf4`, `to-fp4` and `to-int8`: one run (convert, verify when asked,
/// report), three ways to choose the method.
protocol QuantizeCommand: Command where Options == QuantizeOptions {}

extension QuantizeCommand {
    /// Converts (or previews), verifies when asked, and prints the report.
    static func run(_ options: QuantizeOptions, console: Console) throws -> Int32 {
        let common = options.common
        let source = try Model.open(options.input)
        guard let output = options.output else {
            let preview = try Quantizer.preview(source, options: options.conversion)
            if common.json { console.printJSON(preview.json) } else { console.say(ConversionText.preview(preview)) }
            return 0
        }
        let report = try Quantizer.convert(source, to: output, options: options.conversion)
        let verified = try options.verification.map { thresholds in
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
            console.say(ConversionText.report(report))
            if let verified { console.say("\n" + VerificationText.summary(verified, kept: output)) }
        }
        if let verified, !verified.passed {
            // The conversion itself succeeded: its output stays, for inspection.
            if !common.json { VerificationText.reportFailures(verified) }
            return 1
        }
        return 0
    }
}

/// `to-nf4` and `to-fp4`: the same options, another codebook.
enum FourBitOptions {
    static let blockSizeOption = Option<Int>("--block-size", "N", "Elements per block: 32, 64 (default), 128, ..., 4096.", in: 1...Int.max)
    static let noDoubleQuantFlag = Flag("--no-double-quant", "Store block absmax values as float32 instead of double-quantizing them.")

    static func spec(_ format: FourBitFormat, abstract: String) -> CommandSpec {
        let name = "to-\(format.rawValue)"
        return CommandSpec(name: name, abstract: abstract,
                           positionals: QuantizeOptions.positionals(format.rawValue.uppercased()), optionalPositionals: 1,
                           options: [blockSizeOption.spec, noDoubleQuantFlag.spec] + QuantizeOptions.selection + VerifyThresholds.options
                               + QuantizeOptions.common,
                           discussion: QuantizeOptions.selectionHelp,
                           examples: ["qconv \(name) Samples/sharded_llama model-\(format.rawValue).qc --verify",
                                      "qconv \(name) model/ --dry-run --only '*self_attn*'",
                                      "qconv \(name) model/ model-\(format.rawValue).qc --skip '*mlp*' --keep-dtype bf16 --verify --max-rel-rmse 0.1",
                                      "qconv \(name) model/ model-\(format.rawValue).qc --block-size 128 --no-double-quant"])
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
enum ToNF4Command: QuantizeCommand {
    static let spec = FourBitOptions.spec(.nf4, abstract: "Quantize to 4-bit NormalFloat (QLoRA) with double-quantized block constants.")
    static func parse(_ arguments: ParsedArguments) throws -> QuantizeOptions { try FourBitOptions.parse(.nf4, arguments) }
}

/// `qconv to-fp4 IN OUT`.
enum ToFP4Command: QuantizeCommand {
    static let spec = FourBitOptions.spec(.fp4, abstract: "Quantize to 4-bit float (bitsandbytes FP4) with double-quantized block constants.")
    static func parse(_ arguments: ParsedArguments) throws -> QuantizeOptions { try FourBitOptions.parse(.fp4, arguments) }
}

/// `qconv to-int8 IN OUT`.
enum ToInt8Command: QuantizeCommand {
    static let thresholdOption = Option<Double>("--outlier-threshold", "T",
                                                "bitsandbytes' absolute rule: a column with any |w| >= T is an outlier; 0 means none.",
                                                expected: "a number >= 0", allowing: { $0 >= 0 })
    static let rmsMultipleOption = Option<Double>("--outlier-rms-multiple", "K",
                                                  "A column whose largest |w| is >= K x the tensor's RMS is an outlier (the default rule, K = 10); 0 means none.",
                                                  expected: "a number >= 0", allowing: { $0 >= 0 })

    static let spec = CommandSpec(
        name: "to-int8",
        abstract: "Quantize to row-wise int8 with outlier columns kept in FP16 (LLM.int8).",
        positionals: QuantizeOptions.positionals("INT8"), optionalPositionals: 1,
        options: [thresholdOption.spec, rmsMultipleOption.spec] + QuantizeOptions.selection + VerifyThresholds.options + QuantizeOptions.common,
        discussion: QuantizeOptions.selectionHelp,
        examples: [
            "qconv to-int8 Samples/sharded_llama model-int8.qc",
            "qconv to-int8 model/ model-int8.qc --outlier-threshold 6",
            "qconv to-int8 model/ model-int8.qc --verify --max-rel-rmse 0.01",
        ]
    )

    static func parse(_ arguments: ParsedArguments) throws -> QuantizeOptions {
        let threshold = try arguments.value(thresholdOption), multiple = try arguments.value(rmsMultipleOption)
        if try QuantizeOutputOptions.wantsBitsandbytes(arguments) {
            // bitsandbytes stores no outlier columns: its threshold acts on activations at run time.
            if let value = threshold ?? multiple, value != 0 {
                throw arguments.usageError("--format hf writes plain int8 of every row, as bitsandbytes stores it (no outlier columns); "
                                           + "drop --outlier-threshold and --outlier-rms-multiple, or write a container")
            }
            return try QuantizeOptions(arguments, method: .int8(outliers: .none))
        }
        var outliers = OutlierCriterion.default
        switch (threshold, multiple) {
        case (.some, .some): throw arguments.usageError("give --outlier-threshold or --outlier-rms-multiple, not both")
        case let (.some(t), nil): outliers = t == 0 ? .none : .absolute(Float(t))
        case let (nil, .some(k)): outliers = k == 0 ? .none : .relativeToRMS(Float(k))
        case (nil, nil): break
        }
        return try QuantizeOptions(arguments, method: .int8(outliers: outliers))
    }

}
