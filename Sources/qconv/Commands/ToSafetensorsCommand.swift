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

    /// The options of `dequant`, which writes the same outputs.
    typealias Options = DequantCommand.Options

    static func parse(_ arguments: ParsedArguments) throws -> Options {
        try DequantCommand.parse(arguments)
    }

    static func run(_ options: Options, console: Console) throws -> Int32 {
        try DequantCommand.write(options, order: .referenceWriter, command: spec.name, console: console)
    }
}
