import QConvCommandLine
import QConvKit

/// `qconv dequant IN OUT`.
enum DequantCommand: Command {
    static let dtypeOption = Option<DType>("--dtype", "T", "Output dtype of float tensors: f32, f16 or bf16 (default: each tensor's source dtype).",
                                           expected: "f32, f16 or bf16") { DType(commandLineName: $0) }
    static let maxShardSizeOption = Option<UInt64>("--max-shard-size", "SIZE", "Write a sharded model folder with shards of at most SIZE (e.g. 5GB, 500MB, 2GiB).",
                                                   expected: "a size such as 5GB, 500MB or 2GiB") { parseByteSize($0).flatMap { $0 > 0 ? $0 : nil } }

    static let spec = CommandSpec(
        name: "dequant",
        abstract: "Turn a qconv container or a bitsandbytes checkpoint back into safetensors.",
        positionals: [
            ("IN", "A qconv container, or a bitsandbytes checkpoint (file or model folder)."),
            ("OUT", "A .safetensors file, or a model folder (any other name; embedded config files are restored)."),
        ],
        options: [dtypeOption.spec, maxShardSizeOption.spec, PartOption.spec, CommonOptions.threads, CommonOptions.json, CommonOptions.quiet,
                  OutputOptions.force],
        discussion: "Names, shapes, order and __metadata__ are those of the original. Tensors stored raw come back bit-identical unless --dtype converts them.",
        examples: [
            "qconv dequant model-nf4.qc restored",
            "qconv dequant model-nf4.qc model.safetensors --dtype bf16",
            "qconv dequant model-nf4.qc restored --max-shard-size 5GB",
        ]
    )

    struct Options: CommandOptions {
        let input: String
        let output: String
        let dtype: DType?
        let maxShardSize: UInt64?
        let part: OutputPart?
        let force: Bool
        let common: CommonOptions
    }

    static func parse(_ arguments: ParsedArguments) throws -> Options {
        Options(input: arguments.positionals[0], output: arguments.positionals[1], dtype: try arguments.value(dtypeOption),
                maxShardSize: try arguments.value(maxShardSizeOption), part: try PartOption.resolve(arguments), force: arguments[OutputOptions.forceFlag],
                common: try CommonOptions(arguments))
    }

    static func run(_ options: Options, console: Console) throws -> Int32 {
        try write(options, order: .source, command: spec.name, console: console) { model in
            guard model.format.storesQuantizedTensors else {
                throw ModelFormatError.wrongKind(path: options.input, found: model.format, expected: "dequant turns a quantized model (a qconv container, a bitsandbytes checkpoint) back into safetensors")
            }
        }
    }

    /// Opens IN, checks it with `check`, writes it as safetensors and reports
    /// it: `dequant` and `to-safetensors`.
    static func write(_ options: Options, order: Dequantizer.TensorOrder, command: String, console: Console,
                      check: (Model) throws -> Void = { _ in }) throws -> Int32 {
        try PartOption.checkFolderOutput(options.part, output: options.output)
        let model = try Model.open(options.input)
        try check(model)
        let report = try Dequantizer.dequantize(model, to: options.output, options: .init(
            dtype: options.dtype, maxShardSize: options.maxShardSize, threads: options.common.threads, overwrite: options.force,
            order: order, command: command, progress: options.common.progress, part: options.part))
        if options.common.json {
            console.printJSON(report.json)
        } else {
            console.say(render(report))
        }
        return 0
    }

    /// The text report of `dequant` and `to-safetensors`.
    static func render(_ report: Dequantizer.Report) -> String {
        var rows = [
            ["wrote", report.output + (report.layout == "folder" ? " (\(report.files.joined(separator: ", ")))" : "")],
            ["tensors", "\(report.tensors.count), \(Format.grouped(report.tensors.reduce(0) { $0 + $1.elementCount })) parameters"],
            ["size", Format.bytes(report.outputBytes)],
        ]
        if let part = report.part { rows.append(PartText.row(part, output: report.output)) }
        rows.append(["time", "\(Format.fixed(report.seconds, 2)) s"])
        return Format.table(rows)
    }
}
