import QConvCommandLine
import QConvKit

/// `qconv to-safetensors IN OUT`.
enum ToSafetensorsCommand: Command {
    static let spec = CommandSpec(
        name: "to-safetensors",
        abstract: "Write any model qconv reads (a PyTorch .bin, FP8, a container) as safetensors.",
        positionals: [
            ("IN", "A PyTorch checkpoint (.bin file or model folder), a safetensors file or model folder, or a qconv container."),
            ("OUT", "A .safetensors file, or a model folder (any other name; config and tokenizer files are copied)."),
        ],
        options: [DequantCommand.dtypeOption.spec, DequantCommand.maxShardSizeOption.spec, PartOption.spec, CommonOptions.threads, CommonOptions.json,
                  CommonOptions.quiet, OutputOptions.force],
        discussion: """
            Tensors are written in the order safetensors' save_file uses, each name once (tensors sharing storage in \
            a .bin are copied for each name). Raw tensors are copied as they are unless --dtype converts them; \
            quantized ones (a container's, scaled FP8) are decoded. From a .bin, the file is byte for byte what \
            safetensors.torch.save_file writes for its state dict. Nothing in a .bin is ever run.
            """,
        examples: [
            "qconv to-safetensors pytorch_model.bin model.safetensors",
            "qconv to-safetensors llama-7b-bin/ llama-7b --max-shard-size 5GB",
            "qconv to-safetensors deepseek-fp8/ deepseek-bf16 --dtype bf16",
            "qconv to-safetensors llama-70b-bin/ llama-70b --max-shard-size 5GB --part auto/8",
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
        Options(input: arguments.positionals[0], output: arguments.positionals[1], dtype: try arguments.value(DequantCommand.dtypeOption),
                maxShardSize: try arguments.value(DequantCommand.maxShardSizeOption), part: try PartOption.resolve(arguments), force: arguments[OutputOptions.forceFlag],
                common: try CommonOptions(arguments))
    }

    static func run(_ options: Options, console: Console) throws -> Int32 {
        try PartOption.checkFolderOutput(options.part, output: options.output)
        let model = try Model.open(options.input)
        let report = try Dequantizer.dequantize(model, to: options.output, options: .init(
            dtype: options.dtype, maxShardSize: options.maxShardSize, threads: options.common.threads, overwrite: options.force,
            order: .referenceWriter, command: spec.name, progress: options.common.progress, part: options.part))
        if options.common.json {
            console.printJSON(report.json)
        } else {
            console.say(DequantCommand.render(report))
        }
        return 0
    }
}
