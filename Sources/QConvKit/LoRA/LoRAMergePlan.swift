/// What merging an adapter does to one base tensor.
///
/// Rows: a tensor of rank 2 or more is viewed as `shape[0]` rows of
/// `elementCount / shape[0]` values (so a 1x1 convolution `[out, in, 1, 1]`
/// has `out` rows of `in`); a tensor of rank 0 or 1 is one row. For rank 2
/// this is `TensorInfo.matrixShape`.
public struct LoRATensorChange {
    public enum Kind: String, Sendable {
        /// `W[out, in] += s * B @ A` (1x1 convolutions alike).
        case linear
        /// `W[in, out] += s * (B @ A)^T` (`fan_in_fan_out`, GPT-2 Conv1D).
        case linearFanInFanOut = "linear-fan-in-fan-out"
        /// `W[vocab, dim] += s * (B @ A)^T`, the delta rounded to W's dtype first (as PEFT does).
        case embedding
        /// `bias += s * lora_B.bias`.
        case bias
        /// The values are the adapter's (modules_to_save, base_layer tensors).
        case replacement
    }

    /// The tensor as the base stores it.
    public let base: TensorInfo
    /// The merged tensor: the base's name and dtype; the adapter's shape when
    /// a whole-tensor replacement resizes it (a grown vocabulary).
    public let output: TensorInfo
    public let kind: Kind
    /// Values that replace the base's before any delta is added.
    public let replacement: StoredTensor?
    /// The module whose factors (or `lora_B.bias`) make the delta; nil for a pure replacement.
    public let module: LoRAModule?
    /// r, alpha and the scale the delta is multiplied by (including the
    /// merge's multiplier); nil for a pure replacement.
    public let rank: Int?
    public let alpha: Double?
    public let scale: Double?
    /// Several adapters' factors combined into this change's (`LoRACombinedModule`);
    /// nil when `module`'s own factors make the delta.
    public internal(set) var combined: LoRACombinedModule? = nil

    /// DoRA: the merged rows (or columns) are rescaled to the magnitude vector.
    public var isDoRA: Bool { kind != .bias && kind != .replacement && module?.magnitude != nil }

    /// DoRA whose norms run across rows (fan_in_fan_out and embeddings): the
    /// column norms need a pass over the whole tensor before any row can be
    /// merged (`MergedTensorSource` streams it twice).
    public var requiresWholeTensor: Bool { isDoRA && kind != .linear }

    /// Adapter tensors that go into this tensor.
    public var adapterTensors: [String] {
        var names = replacement.map { [$0.name] } ?? []
        if let combined { return names + combined.adapterTensors }
        guard let module else { return names }
        if kind == .bias {
            names += module.upBias.map { [$0.name] } ?? []
        } else {
            names += [module.down.name, module.up.name] + (module.magnitude.map { [$0.name] } ?? [])
        }
        return names
    }

    public var rowCount: Int { Self.rows(of: output.shape) }
    public var columnCount: Int { rowCount == 0 ? 0 : output.elementCount / rowCount }

    static func rows(of shape: [Int]) -> Int { shape.count >= 2 ? shape[0] : 1 }
}

/// Which base tensors an adapter changes and how, checked against the base
/// before anything is read or written. Works from `TensorInfo`s alone, so the
/// same plan serves safetensors bases and quantized containers (dequantize,
/// `prepare(_:)` + `apply`, quantize again).
public struct LoRAMergePlan {
    /// Base dtypes a merge can change: the float32 arithmetic is exact for
    /// their values and rounds once to them. F64 is not among them: merging in
    /// float32 would silently drop its precision.
    public static let mergeableDTypes: Set<DType> = [.f32, .f16, .bf16]

    public let adapter: LoRAAdapter
    /// Every adapter merged, in order: `adapter` alone, or those a combination merges.
    public let adapters: [LoRAAdapter]
    /// How adapter names were turned into base names.
    public let mapping: LoRAKeyMapping
    /// Each adapter's mapping, in the order of `adapters`.
    public let mappings: [LoRAKeyMapping]
    /// The multiplier applied to every delta (the user's scale).
    public let scaleMultiplier: Double
    /// How several adapters were combined into one (PEFT's `add_weighted_adapter`); nil for one adapter merged as it is.
    public let combination: LoRACombination?
    /// The tied embeddings the merge unties (planned on `TiedEmbeddings.withOutputTensor`); nil when it leaves the base tied or untied as it was.
    public internal(set) var untiedEmbeddings: TiedEmbeddings? = nil
    /// The deltas' products summed with one rounding per step, as torch's
    /// CPU sgemm does (`FusedProducts`): set by `throughQuantization(_:)`
    /// for the merges that give PEFT's bits where no earlier output is to be
    /// kept (through a quantization); combined changes always sum this way.
    public private(set) var fusesProducts = false
    /// The changed tensors, in the order of the base tensors given.
    public private(set) var changes: [LoRATensorChange]
    private let changeIndex: [String: Int]

    /// Matches every adapter tensor to a base tensor and checks shapes, ranks
    /// and dtypes. Throws `LoRAMergeError.adapterDoesNotFitBase` listing every
    /// problem when anything does not fit.
    ///
    /// - Parameters:
    ///   - baseTensors: the base checkpoint's tensors (names, dtypes, shapes).
    ///   - baseDescription: the base's path, for messages.
    public init(adapter: LoRAAdapter, baseTensors: [TensorInfo], scaleMultiplier: Double = 1, baseDescription: String) throws {
        var baseByName: [String: TensorInfo] = [:]
        for info in baseTensors { baseByName[info.name] = info }

        var adapterNames = adapter.replacements.map(\.target)
        for module in adapter.modules {
            adapterNames.append(module.weightName)
            if module.upBias != nil { adapterNames.append(module.biasName) }
        }
        let mapping = LoRAKeyMapping.resolve(adapterNames: adapterNames, baseNames: Set(baseByName.keys))

        var builder = PlanBuilder(adapter: adapter, mapping: mapping, baseByName: baseByName, multiplier: scaleMultiplier)
        try builder.addReplacements()
        for module in adapter.modules { builder.add(module) }
        guard builder.problems.isEmpty else {
            throw LoRAMergeError.adapterDoesNotFitBase(adapter: adapter.path, base: baseDescription, mapping: mapping.description, problems: builder.problems)
        }
        self.init(adapters: [adapter], mappings: [mapping], scaleMultiplier: scaleMultiplier, combination: nil,
                  changes: baseTensors.compactMap { builder.changes[$0.name] })
    }

    /// A plan of the given changes (in base order).
    init(adapters: [LoRAAdapter], mappings: [LoRAKeyMapping], scaleMultiplier: Double, combination: LoRACombination?, changes: [LoRATensorChange]) {
        adapter = adapters[0]
        self.adapters = adapters
        mapping = mappings[0]
        self.mappings = mappings
        self.scaleMultiplier = scaleMultiplier
        self.combination = combination
        self.changes = changes
        var index: [String: Int] = [:]
        for (i, change) in changes.enumerated() { index[change.base.name] = i }
        changeIndex = index
    }

    /// The change to a base tensor, or nil when the adapter leaves it alone.
    public func change(for baseName: String) -> LoRATensorChange? {
        changeIndex[baseName].map { changes[$0] }
    }

    /// Reads and decodes the adapter tensors one change needs.
    ///
    /// - Parameter decodeReplacement: also decode a replacement tensor (a
    ///   whole modules_to_save tensor) into memory. `MergedTensorSource`
    ///   streams it instead when this is false.
    /// - Parameters:
    ///   - threads: for combined changes, the threads their factors are computed on.
    public func prepare(_ change: LoRATensorChange, decodeReplacement: Bool = true, threads: Int = 1) throws -> LoRAPreparedChange {
        try LoRAPreparedChange(change, decodeReplacement: decodeReplacement, threads: threads, fusedProducts: fusesProducts)
    }

    /// This plan as PEFT merges into a QLoRA model whose layers `isQuantized`
    /// picks are bitsandbytes layers: every delta's products summed as
    /// torch's sgemm sums them, and a combined adapter held in float32 on
    /// those layers (PEFT makes it in the dtype of a float layer only).
    public func throughQuantization(_ isQuantized: (TensorInfo) -> Bool) -> LoRAMergePlan {
        var plan = self
        plan.fusesProducts = true
        for i in plan.changes.indices where isQuantized(plan.changes[i].base) {
            plan.changes[i].combined?.factorDType = nil
        }
        return plan
    }
}

/// Collects changes and fit problems while a plan is built.
private struct PlanBuilder {
    let adapter: LoRAAdapter
    let mapping: LoRAKeyMapping
    let baseByName: [String: TensorInfo]
    let multiplier: Double
    var problems: [LoRAFitProblem] = []
    var changes: [String: LoRATensorChange] = [:]
    /// Base name -> replacement, consumed by the module that adds a delta on top.
    var replacements: [String: StoredTensor] = [:]

    init(adapter: LoRAAdapter, mapping: LoRAKeyMapping, baseByName: [String: TensorInfo], multiplier: Double) {
        self.adapter = adapter
        self.mapping = mapping
        self.baseByName = baseByName
        self.multiplier = multiplier
    }

    /// The base tensor an adapter-side name maps to, or a recorded problem.
    mutating func base(for adapterName: String, adapterTensor: String) -> TensorInfo? {
        let name = mapping.baseName(for: adapterName) ?? adapterName
        guard let info = baseByName[name] else {
            problems.append(.noBaseTensor(adapterTensor: adapterTensor, expected: name))
            return nil
        }
        guard LoRAMergePlan.mergeableDTypes.contains(info.dtype) else {
            problems.append(.unsupportedBaseDType(baseTensor: name, dtype: info.dtype))
            return nil
        }
        return info
    }

    mutating func checkDecodable(_ tensors: [StoredTensor]) -> Bool {
        var ok = true
        for tensor in tensors where !tensor.info.dtype.isDecodableToFloat {
            problems.append(.unsupportedAdapterDType(adapterTensor: tensor.name, dtype: tensor.info.dtype))
            ok = false
        }
        return ok
    }

    mutating func addReplacements() throws {
        for replacement in adapter.replacements {
            let tensor = replacement.tensor
            guard let base = base(for: replacement.target, adapterTensor: tensor.name), checkDecodable([tensor]) else { continue }
            if let previous = replacements[base.name] {
                throw LoRAMergeError.conflictingTensors(file: adapter.weightsPath, baseTensor: base.name, tensors: [previous.name, tensor.name])
            }
            let shape = tensor.info.shape
            // A resized vocabulary changes the first dimension only.
            let resized = shape.count == base.shape.count && shape.count >= 1 && shape.dropFirst() == base.shape.dropFirst()
            guard shape == base.shape || resized else {
                problems.append(.shapeMismatch(adapterTensor: tensor.name, shape: shape, baseTensor: base.name, baseShape: base.shape,
                                               rule: "a whole-tensor replacement has the base tensor's shape (only the first dimension may differ, for a resized vocabulary)"))
                continue
            }
            replacements[base.name] = tensor
            changes[base.name] = LoRATensorChange(
                base: base, output: TensorInfo(name: base.name, dtype: base.dtype, shape: shape), kind: .replacement,
                replacement: tensor, module: nil, rank: nil, alpha: nil, scale: nil)
        }
    }

    mutating func add(_ module: LoRAModule) {
        let factors = [module.down, module.up] + (module.magnitude.map { [$0] } ?? [])
        guard let base = base(for: module.weightName, adapterTensor: module.down.name), checkDecodable(factors) else { return }
        let replacement = replacements[base.name]
        let shape = replacement?.info.shape ?? base.shape
        let kind: LoRATensorChange.Kind
        switch module.kind {
        case .embedding: kind = .embedding
        case .linear: kind = adapter.config.fanInFanOut ? .linearFanInFanOut : .linear
        }
        guard let outFeatures = checkFactors(module, kind: kind, baseName: base.name, shape: shape) else { return }
        if let magnitude = module.magnitude, magnitude.info.elementCount != outFeatures {
            problems.append(.shapeMismatch(adapterTensor: magnitude.name, shape: magnitude.info.shape, baseTensor: base.name, baseShape: shape,
                                           rule: "lora_magnitude_vector has one value per output feature (\(outFeatures))"))
            return
        }
        let scale = adapter.config.scale(rank: module.rank, alpha: module.alpha, multiplier: multiplier)
        changes[base.name] = LoRATensorChange(
            base: base, output: TensorInfo(name: base.name, dtype: base.dtype, shape: shape), kind: kind,
            replacement: replacement, module: module, rank: module.rank, alpha: module.alpha, scale: scale)

        if let upBias = module.upBias {
            addBias(upBias, of: module, outFeatures: outFeatures, scale: scale)
        }
    }

    /// Checks the factor shapes against the (possibly replaced) base weight
    /// and returns the number of output features.
    mutating func checkFactors(_ module: LoRAModule, kind: LoRATensorChange.Kind, baseName: String, shape: [Int]) -> Int? {
        let a = module.down, b = module.up
        func mismatch(_ tensor: StoredTensor, _ rule: String) -> Int? {
            problems.append(.shapeMismatch(adapterTensor: tensor.name, shape: tensor.info.shape, baseTensor: baseName, baseShape: shape, rule: rule))
            return nil
        }
        /// `[x, y]` followed only by 1s (1x1 convolution factors).
        func isMatrix(_ s: [Int], _ x: Int, _ y: Int) -> Bool {
            s.count >= 2 && s[0] == x && s[1] == y && s.dropFirst(2).allSatisfy { $0 == 1 }
        }
        guard shape.count >= 2 else { return mismatch(a, "LoRA factors need a weight of two or more dimensions") }
        if shape.count > 2 {
            guard kind == .linear else { return mismatch(a, "\(kind.rawValue) LoRA needs a 2-D weight") }
            guard shape.dropFirst(2).allSatisfy({ $0 == 1 }) else {
                problems.append(.unsupportedConvKernel(baseTensor: baseName, shape: shape))
                return nil
            }
        }
        let rank = a.info.shape.first ?? 0
        guard rank == module.rank else {
            problems.append(.rankMismatch(adapterTensor: a.name, shape: a.info.shape, configRank: module.rank))
            return nil
        }
        switch kind {
        case .linear:
            let (outFeatures, inFeatures) = (shape[0], shape[1])
            guard isMatrix(a.info.shape, rank, inFeatures) else { return mismatch(a, "lora_A is [r, in] = [\(rank), \(inFeatures)] for a weight [out, in]") }
            guard isMatrix(b.info.shape, outFeatures, rank) else { return mismatch(b, "lora_B is [out, r] = [\(outFeatures), \(rank)] for a weight [out, in]") }
            return outFeatures
        case .linearFanInFanOut:
            let (inFeatures, outFeatures) = (shape[0], shape[1])
            guard isMatrix(a.info.shape, rank, inFeatures) else { return mismatch(a, "lora_A is [r, in] = [\(rank), \(inFeatures)] for a fan_in_fan_out weight [in, out]") }
            guard isMatrix(b.info.shape, outFeatures, rank) else { return mismatch(b, "lora_B is [out, r] = [\(outFeatures), \(rank)] for a fan_in_fan_out weight [in, out]") }
            return outFeatures
        case .embedding:
            let (vocabulary, dimension) = (shape[0], shape[1])
            guard a.info.shape == [rank, vocabulary] else { return mismatch(a, "lora_embedding_A is [r, vocab] = [\(rank), \(vocabulary)] for an embedding [vocab, dim]") }
            guard b.info.shape == [dimension, rank] else { return mismatch(b, "lora_embedding_B is [dim, r] = [\(dimension), \(rank)] for an embedding [vocab, dim]") }
            return dimension
        case .bias, .replacement:
            return nil
        }
    }

    mutating func addBias(_ upBias: StoredTensor, of module: LoRAModule, outFeatures: Int, scale: Double) {
        guard let base = base(for: module.biasName, adapterTensor: upBias.name), checkDecodable([upBias]) else { return }
        let replacement = replacements[base.name]
        let shape = replacement?.info.shape ?? base.shape
        guard upBias.info.elementCount == outFeatures, shape == [outFeatures] else {
            problems.append(.shapeMismatch(adapterTensor: upBias.name, shape: upBias.info.shape, baseTensor: base.name, baseShape: shape,
                                           rule: "lora_B.bias and the base bias both have one value per output feature (\(outFeatures))"))
            return
        }
        changes[base.name] = LoRATensorChange(
            base: base, output: TensorInfo(name: base.name, dtype: base.dtype, shape: shape), kind: .bias,
            replacement: replacement, module: module, rank: module.rank, alpha: module.alpha, scale: scale)
    }
}
