extension BitsandbytesPlan {
    /// The pieces a tensor is stored as (docs/FORMAT.md).
    ///
    /// - Throws: `BitsandbytesError` when a quantized tensor is not a linear
    ///   layer's weight as transformers quantizes them, or its scheme has no
    ///   bitsandbytes form (int8 outlier columns, a dtype bitsandbytes does not record).
    static func unit(_ tensor: TensorInfo, _ scheme: TensorScheme, source: String) throws -> Unit {
        switch scheme {
        case .raw:
            return Unit(tensor: tensor, scheme: scheme, pieces: [Piece(info: tensor, content: .part(0))])
        case .strided, .scaledFP8:
            preconditionFailure("\(tensor.name): a writer plans with output schemes; strided views and FP8 weights are written raw")
        case .fourBit(let p):
            try checkLinearWeight(tensor)
            guard TorchDTypeName.name(of: tensor.dtype) != nil else {
                throw BitsandbytesError.noBitsandbytesForm(path: source, tensor: tensor.name,
                                                           reason: "is \(tensor.dtype.rawValue); bitsandbytes records float16, bfloat16 or float32")
            }
            let layouts = scheme.parts(for: tensor)
            let w = tensor.name
            var pieces = [
                Piece(info: TensorInfo(name: w, dtype: .u8, shape: [layouts[0].shape[0], 1]), content: .part(0)),
                Piece(info: TensorInfo(name: w + "." + BitsandbytesPiece.absmax, dtype: layouts[1].dtype, shape: layouts[1].shape), content: .part(1)),
                Piece(info: TensorInfo(name: w + "." + BitsandbytesPiece.quantMap, dtype: .f32, shape: [16]),
                      content: .bytes(littleEndianBytes(BitsandbytesPiece.quantMapValues(p.format)))),
            ]
            if case .doubleQuantized = p.blockScales {
                pieces.append(Piece(info: TensorInfo(name: w + "." + BitsandbytesPiece.nestedAbsmax, dtype: .f32, shape: layouts[2].shape), content: .part(2)))
                pieces.append(Piece(info: TensorInfo(name: w + "." + BitsandbytesPiece.nestedQuantMap, dtype: .f32, shape: [256]),
                                    content: .bytes(littleEndianBytes(BitsandbytesPiece.nestedQuantMapValues))))
            }
            let state = Array(BitsandbytesQuantState(tensor, p).json.utf8)
            pieces.append(Piece(info: TensorInfo(name: BitsandbytesPiece.quantStateName(of: w, format: p.format), dtype: .u8, shape: [state.count]),
                                content: .bytes(state)))
            return Unit(tensor: tensor, scheme: scheme, pieces: pieces)
        case .int8(let p):
            try checkLinearWeight(tensor)
            guard p.outlierColumnCount == 0 else {
                throw BitsandbytesError.noBitsandbytesForm(path: source, tensor: tensor.name,
                                                           reason: "is int8 with \(p.outlierColumnCount) outlier columns kept in FP16")
            }
            let module = BitsandbytesPiece.module(of: tensor.name) ?? tensor.name
            let rows = tensor.matrixShape.rows
            return Unit(tensor: tensor, scheme: scheme, pieces: [
                Piece(info: TensorInfo(name: tensor.name, dtype: .i8, shape: tensor.shape), content: .part(0)),
                Piece(info: TensorInfo(name: module + "." + BitsandbytesPiece.rowScales, dtype: .f32, shape: [rows]), content: .part(1)),
                Piece(info: TensorInfo(name: module + "." + BitsandbytesPiece.weightFormat, dtype: .u8, shape: []), content: .bytes([0])),
            ])
        }
    }

    /// transformers quantizes the weights of linear layers: `P.weight`, two
    /// dimensions, not an embedding or a norm.
    static func checkLinearWeight(_ tensor: TensorInfo) throws {
        guard BitsandbytesPiece.module(of: tensor.name) != nil else {
            throw BitsandbytesError.notALinearWeight(tensor: tensor.name, reason: "its name does not end in .weight")
        }
        guard tensor.shape.count == 2 else {
            throw BitsandbytesError.notALinearWeight(tensor: tensor.name, reason: "it has \(tensor.shape.count) dimensions, not 2")
        }
        guard !isNotLinear(tensor.name) else {
            throw BitsandbytesError.notALinearWeight(tensor: tensor.name, reason: "embeddings and norms stay unquantized")
        }
    }

    /// Embeddings and norms, by name (`TensorSelection`'s default rule without `lm_head`).
    static func isNotLinear(_ name: String) -> Bool {
        TensorSelection.isLeftUnquantizedByDefault(name) && !name.lowercased().split(separator: ".").contains("lm_head")
    }

    /// The `llm_int8_skip_modules` a config needs so that transformers keeps
    /// exactly the linear layers stored raw unquantized: nil (transformers'
    /// default, which keeps `lm_head`) when those are at most `lm_head`,
    /// else their modules, sorted.
    static func skipModules(_ tensors: [(info: TensorInfo, scheme: TensorScheme)]) -> [String]? {
        var raw: [String] = [], lmHeadQuantized = false
        for (info, scheme) in tensors {
            guard let module = BitsandbytesPiece.module(of: info.name), info.shape.count == 2, info.dtype.isDecodableToFloat,
                  !isNotLinear(info.name) else { continue }
            if scheme.isQuantized {
                if module == "lm_head" { lmHeadQuantized = true }
            } else {
                raw.append(module)
            }
        }
        if !lmHeadQuantized && raw.allSatisfy({ $0 == "lm_head" }) { return nil }
        return raw.sorted(by: Unit.precedes)
    }

    /// The mode every quantized tensor shares.
    ///
    /// - Throws: `BitsandbytesError.mixedSchemes` when they differ (one config describes them all).
    static func mode(_ tensors: [(info: TensorInfo, scheme: TensorScheme)]) throws -> BitsandbytesConfig.Mode? {
        var found: (mode: BitsandbytesConfig.Mode, tensor: String)?
        for (info, scheme) in tensors {
            let mode: BitsandbytesConfig.Mode
            switch scheme {
            case .raw: continue
            case .strided, .scaledFP8:
                preconditionFailure("\(info.name): a writer plans with output schemes; strided views and FP8 weights are written raw")
            case .fourBit(let p): mode = .fourBit(p.format, doubleQuant: p.blockScales != .float32)
            case .int8: mode = .eightBit
            }
            guard let first = found else { found = (mode, info.name); continue }
            if first.mode != mode { throw BitsandbytesError.mixedSchemes(tensor: info.name, other: first.tensor) }
        }
        return found?.mode
    }

    static func littleEndianBytes(_ values: [Float]) -> [UInt8] {
        values.flatMap { value -> [UInt8] in
            let bits = value.bitPattern.littleEndian
            return withUnsafeBytes(of: bits) { Array($0) }
        }
    }
}
