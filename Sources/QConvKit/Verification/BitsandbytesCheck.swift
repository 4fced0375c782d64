/// `verify BNB`: whether transformers would load a bitsandbytes checkpoint,
/// and every reason it would not, one problem per weight and rule:
///
/// - a piece of a weight missing, or a tensor named like a piece that no
///   weight uses (`piece_missing`, `piece_unexpected`);
/// - a quant-state blob that is not the JSON bitsandbytes reads
///   (`quant_state_invalid`), or that disagrees with the weight's pieces
///   (`quant_state_disagrees`: the shape's element count against the packed
///   codes, the block size against the absmax count, double quantization);
/// - a piece of the wrong dtype or shape, or whose values bitsandbytes would
///   not accept: its code tables, the int8 weight format (`piece_layout`, `piece_contents`);
/// - the pieces of one weight in different shards (`pieces_in_several_shards`);
/// - config.json missing, unreadable, or whose quantization_config does not
///   describe the weights: quant method, 4-bit or 8-bit, quant type, double
///   quantization (`config_invalid`, `config_disagrees`).
///
/// Headers, the index against the shards and every piece's size are checked
/// when the checkpoint is opened (`Checkpoint`), whose errors are thrown.
public enum BitsandbytesCheck {
    public struct Report {
        public var path: String
        public var format: ModelFormat
        /// Quantized weights per scheme ("nf4, block size 64, double quant"), in order of first appearance.
        public var schemes: [(scheme: String, count: Int)]
        public var tensorCount: Int
        public var shardCount: Int
        public var problems: [BitsandbytesError]

        /// transformers would load it.
        public var loads: Bool { problems.isEmpty }

        public var json: JSONValue {
            .object([
                "checkpoint": .string(path), "format": .string(format.name), "ok": .bool(loads),
                "schemes": .object(JSONObject(schemes.map { ($0.scheme, JSONValue.int($0.count)) })),
                "tensor_count": .int(tensorCount), "shard_count": .int(shardCount),
                "problems": .array(problems.map { problem in
                    .object(["rule": .string(problem.rule), "weight": .string(problem.weight), "message": .string(problem.description)])
                }),
            ])
        }
    }

    /// Checks the checkpoint at `path`.
    ///
    /// - Throws: the checkpoint's errors (headers, index), `IOError`.
    public static func check(path: String) throws -> Report {
        let checkpoint = try Checkpoint(path: path)
        var problems: [BitsandbytesError] = []
        var config: BitsandbytesConfigFile?
        if checkpoint.layout != .file {
            if let file = BitsandbytesConfigFile.read(folder: path) {
                do { config = try BitsandbytesConfigFile(path: file.path, bytes: file.bytes) } catch let error as BitsandbytesError {
                    problems.append(error)
                }
            } else {
                problems.append(.configInvalid(file: FileSystem.join(path, TransformersConfig.fileName),
                                               reason: "is missing; transformers needs it, with quantization_config, to load the weights"))
            }
        }
        let layout = BitsandbytesLayout(checkpoint: checkpoint, config: config)
        problems += layout.problems
        return Report(path: path, format: .bitsandbytes(checkpoint.layout), schemes: Model.quantizedSchemeCounts(layout.tensors), tensorCount: layout.tensors.count,
                      shardCount: checkpoint.shards.count, problems: problems)
    }
}
