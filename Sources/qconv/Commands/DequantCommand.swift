import QConvKit

/// `qconv dequant IN OUT`.
enum DequantCommand: Command {
    static let spec = CommandSpec(
        name: "dequant",
        abstract: "Turn a qconv container back into safetensors.",
        positionals: [
            ("IN", "A qconv container."),
            ("OUT", "A .safetensors file, or a model folder (any other name; embedded config files are restored)."),
        ],
        options: [
            .value("--dtype", "T", "Output dtype of float tensors: f32, f16 or bf16 (default: each tensor's source dtype)."),
            .value("--max-shard-size", "SIZE", "Write a sharded model folder with shards of at most SIZE (e.g. 5GB, 500MB, 2GiB)."),
            CommonOptions.threads, CommonOptions.json, CommonOptions.quiet, CommonOptions.force,
        ],
        discussion: "Names, shapes, order and __metadata__ are those of the original. Tensors stored raw come back bit-identical unless --dtype converts them."
    )

    static func run(_ arguments: ParsedArguments, console: Console) throws -> Int32 {
        var options = Dequantizer.Options(threads: try arguments.threads(), overwrite: arguments.flag("--force"),
                                          quiet: arguments.flag("--quiet") || arguments.flag("--json"))
        if let name = arguments.value("--dtype") {
            guard let dtype = DType(commandLineName: name) else { throw arguments.usageError("--dtype must be f32, f16 or bf16, got '\(name)'") }
            options.dtype = dtype
        }
        if let size = arguments.value("--max-shard-size") {
            guard let bytes = parseByteSize(size), bytes > 0 else { throw arguments.usageError("--max-shard-size: cannot read '\(size)' as a size (e.g. 5GB, 500MB, 2GiB)") }
            options.maxShardSize = bytes
        }
        let report = try Dequantizer.dequantize(try ContainerFile(path: arguments.positionals[0]), to: arguments.positionals[1], options: options)
        if arguments.flag("--json") {
            console.printJSON(report.json)
        } else {
            console.say(Format.table([
                ["wrote", report.output + (report.layout == "folder" ? " (\(report.files.joined(separator: ", ")))" : "")],
                ["tensors", "\(report.tensors.count), \(Format.grouped(report.tensors.reduce(0) { $0 + $1.elementCount })) parameters"],
                ["size", Format.bytes(report.outputBytes)],
                ["time", "\(Format.fixed(report.seconds, 2)) s"],
            ]))
        }
        return 0
    }

    /// "5GB" -> 5_000_000_000 (decimal, as transformers), "2GiB" -> 2 * 2^30, "1024" -> 1024.
    static func parseByteSize(_ text: String) -> UInt64? {
        let units: [(String, UInt64)] = [("KIB", 1 << 10), ("MIB", 1 << 20), ("GIB", 1 << 30), ("TIB", 1 << 40),
                                         ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000), ("B", 1)]
        let upper = text.uppercased()
        for (suffix, scale) in units where upper.hasSuffix(suffix) {
            guard let number = Double(upper.dropLast(suffix.count)), number >= 0 else { return nil }
            let value = number * Double(scale)
            return value < 1.8e19 ? UInt64(value) : nil
        }
        return UInt64(text)
    }
}
