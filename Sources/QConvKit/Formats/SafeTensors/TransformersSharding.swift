/// How transformers splits a model into shard files (`save_pretrained` with
/// `max_shard_size`, through huggingface_hub), for every writer of sharded
/// safetensors (`CheckpointWriter`, `BitsandbytesPlan`).
enum TransformersSharding {
    /// huggingface_hub's `split_state_dict_into_shards`: items in order; an
    /// item larger than the limit is a shard of its own (appended at once);
    /// otherwise a new shard starts when the item would push the current one
    /// past the limit. Returns the item indexes of each shard (one empty
    /// shard for no items).
    static func groups(_ sizes: [UInt64], maximumBytes: UInt64) -> [[Int]] {
        var groups: [[Int]] = [], current: [Int] = [], size: UInt64 = 0
        for (i, bytes) in sizes.enumerated() {
            if bytes > maximumBytes { groups.append([i]); continue }
            if size + bytes > maximumBytes {
                groups.append(current)
                (current, size) = ([], 0)
            }
            current.append(i)
            size += bytes
        }
        if !current.isEmpty || groups.isEmpty { groups.append(current) }
        return groups
    }

    /// `model.safetensors`, or `model-00001-of-00003.safetensors`, ...
    static func fileNames(count: Int) -> [String] {
        guard count > 1 else { return [Checkpoint.singleFileName] }
        func padded(_ n: Int) -> String { let s = String(n); return String(repeating: "0", count: max(0, 5 - s.count)) + s }
        return (1...count).map { "model-\(padded($0))-of-\(padded(count)).safetensors" }
    }
}
