/// A safetensors checkpoint read as transformers' bitsandbytes layout: each
/// quantized weight gathered from its pieces into one logical tensor (the
/// weight's name, source dtype and shape, its scheme and parts), every other
/// tensor raw, and every way the checkpoint breaks the layout transformers
/// loads (`problems`, in the order found). `BitsandbytesReader` refuses a
/// checkpoint with problems; `BitsandbytesCheck` lists them all.
struct BitsandbytesLayout {
    let checkpoint: Checkpoint
    let config: BitsandbytesConfigFile?
    /// Logical tensors, shard by shard, by name.
    private(set) var tensors: [ModelTensor] = []
    /// Every rule the checkpoint breaks, in the order found.
    var problems: [BitsandbytesError] = []
    /// Every tensor of the checkpoint that is a piece of a quantized weight.
    private var claimed = Set<String>()
    /// Quantized weights by name, with their quant state (nil for int8).
    private var quantized: [(name: String, state: BitsandbytesQuantState?)] = []

    /// Torch names of the quant-state blob suffixes: `bitsandbytes__nf4`, `bitsandbytes__fp4`.
    static let quantStateMarker = "." + BitsandbytesPiece.quantStatePrefix
    /// Largest quant-state blob read (real ones are under 200 bytes).
    static let maximumQuantStateBytes = 1 << 16

    init(checkpoint: Checkpoint, config: BitsandbytesConfigFile?) {
        self.checkpoint = checkpoint
        self.config = config
        var logical: [(tensor: ModelTensor, shard: Int)] = []
        for tensor in checkpoint.tensors {
            guard let marker = tensor.name.range(of: Self.quantStateMarker) else { continue }
            let weight = String(tensor.name[..<marker.lowerBound])
            if claimed.contains(tensor.name) { continue }
            claimed.insert(tensor.name)
            if quantizedContains(weight) {
                problems.append(.pieceUnexpected(file: path(of: tensor), weight: weight, piece: tensor.name, why: "the weight has another quant state"))
                continue
            }
            if let made = fourBitTensor(weight, blob: tensor, formatName: String(tensor.name[marker.upperBound...])) {
                logical.append(made)
            }
        }
        for module in int8Modules() {
            if let made = int8Tensor(module: module) { logical.append(made) }
        }
        reportOrphans()
        if let config { checkConfig(config) }
        for tensor in checkpoint.tensors where !claimed.contains(tensor.name) {
            logical.append((SafeTensorsReader.rawTensor(tensor), tensor.shard))
        }
        logical.sort { $0.shard != $1.shard ? $0.shard < $1.shard : $0.tensor.name < $1.tensor.name }
        tensors = logical.map(\.tensor)
    }

    /// The quantized weights, with their quant state (nil for int8), as found.
    var quantizedWeights: [(name: String, state: BitsandbytesQuantState?)] { quantized }

    func quantizedContains(_ weight: String) -> Bool { quantized.contains { $0.name == weight } }

    mutating func recordQuantized(_ weight: String, state: BitsandbytesQuantState? = nil) { quantized.append((weight, state)) }

    /// Marks a tensor as a piece of a quantized weight.
    mutating func claim(_ name: String) { claimed.insert(name) }

    /// The path messages name for a tensor: its shard.
    func path(of tensor: Checkpoint.Tensor) -> String { checkpoint.shards[tensor.shard].path }

    // MARK: 4-bit

    /// The logical tensor of a 4-bit weight, from its quant-state blob and pieces; nil when they break a rule.
    private mutating func fourBitTensor(_ weight: String, blob: Checkpoint.Tensor, formatName: String) -> (tensor: ModelTensor, shard: Int)? {
        let file = path(of: blob)
        guard let format = FourBitFormat(rawValue: formatName) else {
            problems.append(.quantStateInvalid(file: file, weight: weight, piece: blob.name, reason: "names the quant type '\(formatName)'; bitsandbytes has nf4 and fp4"))
            return nil
        }
        guard blob.info.dtype == .u8, blob.info.shape.count == 1, blob.info.byteCount <= Self.maximumQuantStateBytes else {
            problems.append(.pieceLayout(file: file, weight: weight, piece: blob.name, found: describe(blob.info),
                                         expected: "U8 [length] holding the UTF-8 bytes of a JSON object"))
            return nil
        }
        let state: BitsandbytesQuantState
        switch read(blob).map(BitsandbytesQuantState.parse) {
        case nil: return nil
        case .failure(let problem)?:
            problems.append(.quantStateInvalid(file: file, weight: weight, piece: blob.name, reason: problem.reason))
            return nil
        case .success(let parsed)?:
            state = parsed
        }
        recordQuantized(weight, state: state)
        guard state.format == format else {
            problems.append(.quantStateDisagrees(file: file, weight: weight,
                                                 reason: "its quant state is named '\(blob.name)' but says quant_type \"\(state.format.rawValue)\""))
            return nil
        }
        let before = problems.count
        let info = TensorInfo(name: weight, dtype: state.dtype, shape: state.shape)
        let scheme = TensorScheme.fourBit(state.parameters)
        let layouts = scheme.parts(for: info)
        let nested = state.nestedOffset != nil
        var found: [Checkpoint.Tensor] = [blob]
        let codes = piece(weight, weight: weight, why: "the packed 4-bit codes", dtype: .u8,
                          shapes: [[layouts[0].shape[0], 1], layouts[0].shape], state: state)
        let absmax = piece(weight + "." + BitsandbytesPiece.absmax, weight: weight, why: nested ? "the double-quantized absmax codes" : "the block absmax values",
                           dtype: layouts[1].dtype, shapes: [layouts[1].shape], state: state)
        let quantMap = piece(weight + "." + BitsandbytesPiece.quantMap, weight: weight, why: "the 4-bit code table", dtype: .f32, shapes: [[16]])
        found += [codes, absmax, quantMap].compactMap { $0 }
        if let quantMap { checkTable(quantMap, weight: weight, expected: BitsandbytesPiece.quantMapValues(format), what: "bitsandbytes' \(format.rawValue) table") }
        var nestedAbsmax: Checkpoint.Tensor?
        let nestedNames = [BitsandbytesPiece.nestedAbsmax, BitsandbytesPiece.nestedQuantMap].map { weight + "." + $0 }
        if nested {
            nestedAbsmax = piece(nestedNames[0], weight: weight, why: "its quant state says double quantization", dtype: .f32,
                                 shapes: [layouts[2].shape], state: state)
            let nestedMap = piece(nestedNames[1], weight: weight, why: "its quant state says double quantization", dtype: .f32, shapes: [[256]])
            if let nestedMap { checkTable(nestedMap, weight: weight, expected: BitsandbytesPiece.nestedQuantMapValues, what: "bitsandbytes' dynamic map") }
            found += [nestedAbsmax, nestedMap].compactMap { $0 }
        } else {
            for name in nestedNames {
                guard let extra = checkpoint.tensor(named: name) else { continue }
                claimed.insert(name)
                problems.append(.pieceUnexpected(file: path(of: extra), weight: weight, piece: name,
                                                 why: "its quant state has no nested_offset: the absmax values are not double-quantized"))
            }
        }
        checkOneShard(weight, found)
        guard problems.count == before, let codes, let absmax else { return nil }
        let pieces = [codes, absmax] + (nestedAbsmax.map { [$0] } ?? [])
        let parts = zip(layouts, pieces).map { StoredPart(layout: $0, bytes: Self.bytes(of: $1)) }
        return (ModelTensor(info: info, scheme: scheme, parts: parts, file: codes.shard), codes.shard)
    }

    // MARK: Pieces

    /// The piece `name` of `weight`, claimed, when it exists with `dtype` and
    /// one of `shapes`; records what is wrong otherwise. A piece whose size
    /// follows from the quant state (`state`) and has the right dtype but
    /// another shape disagrees with the state.
    mutating func piece(_ name: String, weight: String, why: String, dtype: DType, shapes: [[Int]],
                        state: BitsandbytesQuantState? = nil) -> Checkpoint.Tensor? {
        guard let tensor = checkpoint.tensor(named: name) else {
            problems.append(.pieceMissing(file: weightFile(weight), weight: weight, piece: name, why: why))
            return nil
        }
        claimed.insert(name)
        guard tensor.info.dtype == dtype, shapes.contains(tensor.info.shape) else {
            let expected = shapes.map { "\(dtype.rawValue) \(TensorInfo(name: name, dtype: dtype, shape: $0).shapeDescription)" }.joined(separator: " or ")
            if let state, tensor.info.dtype == dtype {
                let stateShape = TensorInfo(name: weight, dtype: state.dtype, shape: state.shape).shapeDescription
                let reason = "'\(name)' is \(describe(tensor.info)), but its quant state (shape \(stateShape), blocksize \(state.blockSize)) needs \(expected)"
                problems.append(.quantStateDisagrees(file: path(of: tensor), weight: weight, reason: reason))
            } else {
                problems.append(.pieceLayout(file: path(of: tensor), weight: weight, piece: name, found: describe(tensor.info), expected: expected))
            }
            return nil
        }
        return tensor
    }

    /// The file a weight's messages name: the shard holding it, or the checkpoint.
    func weightFile(_ weight: String) -> String {
        checkpoint.tensor(named: weight).map(path(of:)) ?? checkpoint.path
    }

    /// A small piece's bytes; records an I/O failure as the piece's problem.
    mutating func read(_ tensor: Checkpoint.Tensor) -> [UInt8]? {
        do { return try tensor.stored.allBytes() } catch {
            problems.append(.pieceContents(file: path(of: tensor), weight: tensor.name, piece: tensor.name, reason: "cannot be read: \(error)"))
            return nil
        }
    }

    /// A code table must hold exactly bitsandbytes' float32 values.
    private mutating func checkTable(_ tensor: Checkpoint.Tensor, weight: String, expected: [Float], what: String) {
        guard let bytes = read(tensor) else { return }
        let values: [UInt32] = bytes.withUnsafeBytes { raw in
            (0..<bytes.count / 4).map { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)) }
        }
        if let i = values.indices.first(where: { values[$0] != expected[$0].bitPattern }) {
            problems.append(.pieceContents(file: path(of: tensor), weight: weight, piece: tensor.name,
                                           reason: "differs from \(what) at entry \(i) (\(Float(bitPattern: values[i])) instead of \(expected[i]))"))
        }
    }

    /// All pieces of a weight must be in one shard.
    mutating func checkOneShard(_ weight: String, _ pieces: [Checkpoint.Tensor]) {
        let shards = Set(pieces.map(\.shard))
        guard shards.count > 1 else { return }
        problems.append(.piecesInSeveralShards(folder: checkpoint.path, weight: weight,
                                               shards: shards.sorted().map { FileSystem.baseName(of: checkpoint.shards[$0].path) }))
    }

    /// "U8 [5632, 1]".
    func describe(_ info: TensorInfo) -> String { "\(info.dtype.rawValue) \(info.shapeDescription)" }

    /// Where a tensor's bytes are.
    static func bytes(of tensor: Checkpoint.Tensor) -> StoredBytes {
        StoredBytes(file: tensor.stored.file, offset: tensor.stored.offset, length: UInt64(tensor.info.byteCount))
    }

    /// Tensors named like 4-bit pieces that no quant state claimed.
    private mutating func reportOrphans() {
        let suffixes = [BitsandbytesPiece.absmax, BitsandbytesPiece.quantMap, BitsandbytesPiece.nestedAbsmax, BitsandbytesPiece.nestedQuantMap]
        let fourBit = Set(quantized.filter { $0.state != nil }.map(\.name))
        for tensor in checkpoint.tensors where !claimed.contains(tensor.name) {
            if let suffix = suffixes.first(where: { tensor.name.hasSuffix("." + $0) }) {
                let weight = String(tensor.name.dropLast(suffix.count + 1))
                claimed.insert(tensor.name)
                problems.append(.pieceUnexpected(file: path(of: tensor), weight: weight, piece: tensor.name,
                                                 why: "no quant state '\(weight).quant_state.bitsandbytes__nf4' or '__fp4' describes it"))
            } else if let dot = tensor.name.lastIndex(of: "."), fourBit.contains(String(tensor.name[..<dot])) {
                claimed.insert(tensor.name)
                problems.append(.pieceUnexpected(file: path(of: tensor), weight: String(tensor.name[..<dot]), piece: tensor.name,
                                                 why: "bitsandbytes stores no such piece"))
            }
        }
    }
}
