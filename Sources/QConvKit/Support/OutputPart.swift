/// Part `index` of `count` of a job array (a Slurm array, a Kubernetes
/// Indexed Job, a CI matrix): which shards of a folder output it writes.
///
/// Parts need no communication: every part computes the same layout from the
/// input's headers and takes its own contiguous run of shards, balanced by
/// bytes, whole shards only. Together the parts write every shard once.
public struct OutputPart: Equatable, Sendable, CustomStringConvertible {
    /// 1...count.
    public let index: Int
    public let count: Int

    /// Nil unless `1 <= index <= count`.
    public init?(index: Int, count: Int) {
        guard count >= 1, (1...count).contains(index) else { return nil }
        self.index = index
        self.count = count
    }

    /// "2/7".
    public var description: String { "\(index)/\(count)" }

    /// The shards (indices into `sizes`, in order) this part writes: those
    /// whose middle byte falls in this part's share of the total bytes. A
    /// shard of zero bytes goes with the part of its position.
    public func shards(ofSizes sizes: [UInt64]) -> [Int] {
        let total = sizes.reduce(0, +)
        var before: UInt64 = 0
        var mine: [Int] = []
        for (shard, size) in sizes.enumerated() {
            // Twice the middle byte's position, against twice the total: integers only.
            let middle = 2 * before + size
            let owner = total == 0 ? shard * count / max(sizes.count, 1) : Int(min(UInt64(count - 1), middle * UInt64(count) / (2 * total)))
            if owner == index - 1 { mine.append(shard) }
            before += size
        }
        return mine
    }
}

/// What one part of a job array wrote: its shard files of the folder's
/// `shardCount` (the index and side files, which every part writes, aside).
public struct PartShards: Sendable {
    public let part: OutputPart
    /// This part's shard file names, in order (none when there are more parts than shards).
    public let written: [String]
    public let shardCount: Int

    public init(part: OutputPart, written: [String], shardCount: Int) {
        self.part = part
        self.written = written
        self.shardCount = shardCount
    }

    public var json: JSONValue {
        .object(["index": .int(part.index), "count": .int(part.count), "shards": .array(written.map { .string($0) }),
                 "shard_count": .int(shardCount)])
    }
}
