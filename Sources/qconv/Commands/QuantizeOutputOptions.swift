import QConvCommandLine
import QConvKit

/// `--format`, `--compute-dtype` and `--max-shard-size` of the quantizing
/// commands: what they write, read once into a `Quantizer.Output`.
enum QuantizeOutputOptions {
    static let formatOption = Option<String>("--format", "F", "What OUT is: qc (default), a qconv container; hf, a model folder in transformers' "
                                             + "bitsandbytes layout that from_pretrained and vLLM load.",
                                             expected: "qc or hf") { ["qc", "hf"].contains($0) ? $0 : nil }
    static let computeDTypeOption = Option<DType>("--compute-dtype", "T", "With --format hf: bnb_4bit_compute_dtype, f16, bf16 or f32 "
                                                  + "(default: the weights' dtype for 4-bit, f32 for int8).",
                                                  expected: "f16, bf16 or f32") { DType(commandLineName: $0) }
    static let maxShardSizeOption = Option<UInt64>("--max-shard-size", "SIZE", "With --format hf: shards of at most SIZE (default 5GB, as transformers).",
                                                   expected: "a size such as 5GB, 500MB or 2GiB") { parseByteSize($0).flatMap { $0 > 0 ? $0 : nil } }
    static let options = [formatOption.spec, computeDTypeOption.spec, maxShardSizeOption.spec]

    /// The output the options ask for.
    static func parse(_ arguments: ParsedArguments) throws -> Quantizer.Output {
        let computeDType = try arguments.value(computeDTypeOption), maxShardSize = try arguments.value(maxShardSizeOption)
        guard try arguments.value(formatOption) == "hf" else {
            if computeDType != nil || maxShardSize != nil {
                throw arguments.usageError("--compute-dtype and --max-shard-size need --format hf")
            }
            return .container
        }
        return .bitsandbytes(computeDType: computeDType, maximumShardBytes: maxShardSize ?? BitsandbytesWriter.defaultMaximumShardBytes)
    }

    /// Whether the arguments ask for the bitsandbytes layout.
    static func wantsBitsandbytes(_ arguments: ParsedArguments) throws -> Bool {
        try arguments.value(formatOption) == "hf"
    }
}
