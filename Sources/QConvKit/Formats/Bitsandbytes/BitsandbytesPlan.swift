/// Where every byte of a bitsandbytes checkpoint goes, planned before
/// anything is written: each tensor's pieces (`Unit`), the shards that hold
/// them (all pieces of a weight in one), each shard's header and the offset
/// of every piece in its data section, and the index.
///
/// The layout is what transformers 5 and safetensors write: units in name
/// order fill shards up to the size limit (huggingface_hub's rule: a unit
/// larger than the limit gets a shard of its own at once), and within a
/// shard the pieces are sorted by dtype (safetensors' order, widest first)
/// and then by name.
struct BitsandbytesPlan {
    /// One stored tensor of the checkpoint.
    struct Piece {
        enum Content {
            /// The tensor's scheme part at this index.
            case part(Int)
            /// Bytes known when planning (a code table, a quant state, a weight format).
            case bytes([UInt8])
        }

        var info: TensorInfo
        var content: Content
    }

    /// A tensor of the model and the pieces it is stored as.
    struct Unit {
        var tensor: TensorInfo
        var scheme: TensorScheme
        var pieces: [Piece]
        var bytes: UInt64 { pieces.reduce(0) { $0 + UInt64($1.info.byteCount) } }
        /// The name that orders units (their first piece's).
        var sortName: String { pieces.map(\.info.name).min(by: Self.precedes) ?? tensor.name }

        /// Byte order of UTF-8, as Python's and Rust's string comparisons.
        static func precedes(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }
    }

    struct Shard {
        var fileName: String
        /// Indexes of `units`, in writing order.
        var units: [Int]
        /// The pieces in file order.
        var pieces: [TensorInfo]
        /// 8-byte length and header JSON.
        var header: [UInt8]
        /// Offset of each piece in the data section, by name.
        var offsets: [String: UInt64]
        var dataLength: UInt64
    }

    /// Units in writing order (shard by shard).
    private(set) var units: [Unit]
    private(set) var shards: [Shard]
    /// The shard of each unit.
    private(set) var shardOfUnit: [Int]

    /// safetensors' `__metadata__` of every shard transformers writes.
    static let metadata = [(key: "format", value: "pt")]

    /// Plans `tensors` (with their final schemes) into shards of at most
    /// `maximumShardBytes`, or into the named shards of `mirroring` (the shard
    /// index of each tensor) when given.
    ///
    /// - Throws: `BitsandbytesError` for a tensor that has no bitsandbytes form.
    init(tensors: [(info: TensorInfo, scheme: TensorScheme)], maximumShardBytes: UInt64,
         mirroring: (names: [String], shardOfTensor: [Int])? = nil, source: String) throws {
        let made = try tensors.map { try Self.unit($0.info, $0.scheme, source: source) }
        var groups: [[Int]]
        var names: [String]
        if let mirroring {
            groups = mirroring.names.indices.map { shard in made.indices.filter { mirroring.shardOfTensor[$0] == shard } }
            names = mirroring.names
        } else {
            let order = made.indices.sorted { Unit.precedes(made[$0].sortName, made[$1].sortName) }
            groups = TransformersSharding.groups(order.map { made[$0].bytes }, maximumBytes: maximumShardBytes).map { $0.map { order[$0] } }
            names = TransformersSharding.fileNames(count: groups.count)
        }
        var units: [Unit] = [], shards: [Shard] = [], shardOfUnit: [Int] = []
        for (number, group) in groups.enumerated() {
            let first = units.count
            units += group.map { made[$0] }
            shardOfUnit += group.map { _ in number }
            shards.append(Self.shard(named: names[number], units: Array(first..<units.count), all: units))
        }
        self.units = units
        self.shards = shards
        self.shardOfUnit = shardOfUnit
    }

    /// safetensors' dtype order (its `Dtype` enum): pieces of later dtypes come first.
    static let dtypeRank: [DType: Int] = {
        let order: [DType] = [.bool, .f4, .f6e2m3, .f6e3m2, .u8, .i8, .f8e5m2, .f8e4m3, .f8e8m0, .f8e4m3fnuz, .f8e5m2fnuz,
                              .i16, .u16, .f16, .bf16, .i32, .u32, .f32, .c64, .f64, .i64, .u64]
        return Dictionary(uniqueKeysWithValues: order.enumerated().map { ($1, $0) })
    }()

    /// A shard's pieces in safetensors' order, its header and offsets.
    private static func shard(named name: String, units indexes: [Int], all units: [Unit]) -> Shard {
        let pieces = indexes.flatMap { units[$0].pieces.map(\.info) }.sorted { a, b in
            let (ra, rb) = (dtypeRank[a.dtype] ?? 0, dtypeRank[b.dtype] ?? 0)
            return ra != rb ? ra > rb : Unit.precedes(a.name, b.name)
        }
        var offsets: [String: UInt64] = [:]
        var offset: UInt64 = 0
        for piece in pieces {
            offsets[piece.name] = offset
            offset += UInt64(piece.byteCount)
        }
        let json = SafeTensorsWriter.headerBytes(tensors: pieces, metadata: metadata)
        var length = UInt64(json.count).littleEndian
        let header = withUnsafeBytes(of: &length) { Array($0) } + json
        return Shard(fileName: name, units: indexes, pieces: pieces, header: header, offsets: offsets, dataLength: offset)
    }

    /// The index (written when there are several shards, or when mirroring one).
    func indexJSON(mirroring source: JSONObject?) -> String {
        var entries: [(tensor: String, file: String)] = []
        for shard in shards { entries += shard.pieces.map { ($0.name, shard.fileName) } }
        return CheckpointWriter.indexJSON(weightMap: entries, totalSize: shards.reduce(0) { $0 + $1.dataLength },
                                          totalParameters: units.reduce(0) { $0 + UInt64($1.tensor.elementCount) }, mirroring: source)
    }
}
