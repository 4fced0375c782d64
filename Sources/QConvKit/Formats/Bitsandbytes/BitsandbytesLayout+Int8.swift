extension BitsandbytesLayout {
    /// Modules `P` with an int8 piece (`P.SCB` or `P.weight_format`), sorted.
    func int8Modules() -> [String] {
        var modules = Set<String>()
        for tensor in checkpoint.tensors {
            for suffix in [BitsandbytesPiece.rowScales, BitsandbytesPiece.weightFormat] where tensor.name.hasSuffix("." + suffix) {
                modules.insert(String(tensor.name.dropLast(suffix.count + 1)))
            }
        }
        return modules.sorted()
    }

    /// The dtype an int8 weight decodes to: the model's (config.json); without
    /// one, that of the checkpoint's 16-bit float tensors (no piece is 16-bit);
    /// else float16, the dtype bitsandbytes quantized it from.
    var int8DType: DType {
        if let dtype = config?.modelDType, dtype.isDecodableToFloat { return dtype }
        return checkpoint.tensors.first { $0.info.dtype == .f16 || $0.info.dtype == .bf16 }?.info.dtype ?? .f16
    }

    /// The logical tensor of the int8 weight `P.weight`; nil when its pieces break a rule.
    mutating func int8Tensor(module: String) -> (tensor: ModelTensor, shard: Int)? {
        let weight = module + BitsandbytesPiece.weightSuffix
        let before = problems.count
        if quantizedContains(weight) {
            for name in [module + "." + BitsandbytesPiece.rowScales, module + "." + BitsandbytesPiece.weightFormat] {
                guard let tensor = checkpoint.tensor(named: name) else { continue }
                claim(name)
                problems.append(.pieceUnexpected(file: path(of: tensor), weight: weight, piece: name, why: "the weight is a 4-bit weight"))
            }
            return nil
        }
        recordQuantized(weight)
        guard let codes = checkpoint.tensor(named: weight) else {
            problems.append(.pieceMissing(file: weightFile(module + "." + BitsandbytesPiece.rowScales), weight: weight, piece: weight,
                                          why: "the int8 codes its row scales belong to"))
            return nil
        }
        claim(weight)
        guard codes.info.dtype == .i8, codes.info.shape.count == 2 else {
            problems.append(.pieceLayout(file: path(of: codes), weight: weight, piece: weight, found: describe(codes.info),
                                         expected: "I8 [rows, columns]"))
            return nil
        }
        let rows = codes.info.shape[0]
        let scales = piece(module + "." + BitsandbytesPiece.rowScales, weight: weight, why: "the row scales of an int8 weight",
                           dtype: .f32, shapes: [[rows]])
        var found = [codes] + (scales.map { [$0] } ?? [])
        if let format = checkpoint.tensor(named: module + "." + BitsandbytesPiece.weightFormat) {
            claim(format.name)
            found.append(format)
            checkWeightFormat(format, weight: weight)
        }
        checkOneShard(weight, found)
        guard problems.count == before, let scales else { return nil }
        let info = TensorInfo(name: weight, dtype: int8DType, shape: codes.info.shape)
        let scheme = TensorScheme.int8(Int8Parameters(outlierRule: .none, outlierColumnCount: 0, outlierThreshold: nil))
        let layouts = scheme.parts(for: info)
        // No outlier columns: those two parts are empty.
        let empty = StoredBytes(file: codes.stored.file, offset: codes.stored.offset, length: 0)
        let parts = [StoredPart(layout: layouts[0], bytes: Self.bytes(of: codes)), StoredPart(layout: layouts[1], bytes: Self.bytes(of: scales)),
                     StoredPart(layout: layouts[2], bytes: empty), StoredPart(layout: layouts[3], bytes: empty)]
        return (ModelTensor(info: info, scheme: scheme, parts: parts, file: codes.shard), codes.shard)
    }

    /// `P.weight_format` is a U8 scalar 0: row-major, the only layout bitsandbytes loads.
    private mutating func checkWeightFormat(_ tensor: Checkpoint.Tensor, weight: String) {
        guard tensor.info.dtype == .u8, tensor.info.elementCount == 1 else {
            problems.append(.pieceLayout(file: path(of: tensor), weight: weight, piece: tensor.name, found: describe(tensor.info), expected: "U8 []"))
            return
        }
        if let bytes = read(tensor), bytes != [0] {
            problems.append(.pieceContents(file: path(of: tensor), weight: weight, piece: tensor.name,
                                           reason: "is \(bytes[0]); only 0 (row-major) is a layout bitsandbytes loads"))
        }
    }

    // MARK: config.json

    /// quantization_config must describe the weights as they are stored:
    /// one problem per disagreement, naming the first weight it concerns.
    mutating func checkConfig(_ config: BitsandbytesConfigFile) {
        var found: [(reason: String, weights: [String])] = []
        func note(_ reason: String, _ weight: String) {
            if let i = found.firstIndex(where: { $0.reason == reason }) { found[i].weights.append(weight) } else { found.append((reason, [weight])) }
        }
        for (weight, state) in quantizedWeights {
            guard config.isBitsandbytes else {
                note(config.quantization == nil
                     ? "config.json has no quantization_config, so transformers would not load the weight as quantized"
                     : "quantization_config's quant_method is not \"bitsandbytes\"", weight)
                continue
            }
            guard let state else {
                if config.flag("load_in_8bit") != true { note("the weight is int8 but quantization_config does not set load_in_8bit", weight) }
                continue
            }
            if config.flag("load_in_4bit") != true { note("the weight is 4-bit but quantization_config does not set load_in_4bit", weight) }
            if config.quantType != state.format.rawValue {
                note("the weight is \(state.format.rawValue) but quantization_config says bnb_4bit_quant_type \"\(config.quantType)\"", weight)
            }
            let nested = state.nestedOffset != nil
            if config.doubleQuant != nested {
                note("the weight is \(nested ? "" : "not ")double-quantized but quantization_config says bnb_4bit_use_double_quant "
                     + "\(config.doubleQuant)", weight)
            }
        }
        for (reason, weights) in found {
            let others = weights.count - 1
            problems.append(.configDisagrees(file: config.path, weight: weights[0],
                                             reason: reason + (others > 0 ? " (and \(others) other weight\(others == 1 ? "" : "s"))" : "")))
        }
    }
}
