import QConvKit

/// The `part` row of the reports of commands that write a folder in parts.
enum PartText {
    /// "2/3: 4 of 11 shards (model-00005-of-00011.safetensors ... model-00008-of-00011.safetensors); ..."
    static func row(_ shards: PartShards, output: String) -> [String] {
        let written: String
        switch shards.written.count {
        case 0: written = "no shard (the \(shards.shardCount) shard\(shards.shardCount == 1 ? "" : "s") went to the other parts)"
        case 1: written = "1 of \(shards.shardCount) shards (\(shards.written[0]))"
        default: written = "\(shards.written.count) of \(shards.shardCount) shards (\(shards.written[0]) ... \(shards.written[shards.written.count - 1]))"
        }
        return ["part", "\(shards.part): \(written) and the shared files; " + whole(shards.part, output: output)]
    }

    /// What a part without shard details says (merge-lora).
    static func row(_ part: OutputPart, output: String) -> [String] {
        ["part", "\(part): its shards and the shared files; " + whole(part, output: output)]
    }

    private static func whole(_ part: OutputPart, output: String) -> String {
        "the folder is whole once all \(part.count) parts have run (check: qconv verify \(output))"
    }
}
