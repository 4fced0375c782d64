/// Why a model folder or its index was rejected.
public enum CheckpointError: QConvError, Equatable {
    /// A folder with neither an index nor a safetensors file.
    case noWeights(folder: String)
    /// A folder with several safetensors files and no index to say which belong together.
    case ambiguousWeights(folder: String, files: [String])
    /// The index is not JSON, or not shaped like `{"metadata": ..., "weight_map": {...}}`.
    case invalidIndex(file: String, reason: String)
    /// The index names a shard path that leaves the folder.
    case unsafeShardName(index: String, tensor: String, shard: String)
    /// The index names a shard that is not in the folder.
    case shardMissing(index: String, shard: String)
    /// The index lists a tensor its shard does not contain.
    case tensorListedButAbsent(index: String, tensor: String, shard: String)
    /// A shard holds a tensor the index does not list.
    case tensorNotListed(index: String, tensor: String, shard: String)
    /// A tensor appears in two shards (or twice in the index).
    case tensorInTwoShards(index: String, tensor: String, shards: [String])
    /// The index lists a tensor under a different shard than the one holding it.
    case tensorInWrongShard(index: String, tensor: String, listed: String, found: String)

    public var category: ErrorCategory { .invalidInput }

    public var description: String {
        switch self {
        case let .noWeights(folder):
            return "\(folder): no model.safetensors or model.safetensors.index.json in this folder"
        case let .ambiguousWeights(folder, files):
            return "\(folder): several safetensors files (\(files.joined(separator: ", "))) and no model.safetensors.index.json"
        case let .invalidIndex(file, reason):
            return "\(file): invalid index: \(reason)"
        case let .unsafeShardName(index, tensor, shard):
            return "\(index): tensor '\(tensor)': shard name '\(shard)' must be a file name in the same folder"
        case let .shardMissing(index, shard):
            return "\(index): shard '\(shard)' is listed in the index but missing from the folder"
        case let .tensorListedButAbsent(index, tensor, shard):
            return "\(index): tensor '\(tensor)': listed in shard '\(shard)', which does not contain it"
        case let .tensorNotListed(index, tensor, shard):
            return "\(index): tensor '\(tensor)': present in shard '\(shard)' but not listed in the index"
        case let .tensorInTwoShards(index, tensor, shards):
            return "\(index): tensor '\(tensor)': listed in more than one shard (\(shards.joined(separator: ", ")))"
        case let .tensorInWrongShard(index, tensor, listed, found):
            return "\(index): tensor '\(tensor)': listed in shard '\(listed)' but stored in '\(found)'"
        }
    }
}
