/// A PEFT LoRA adapter folder (`adapter_config.json` +
/// `adapter_model.safetensors`, or the PyTorch `adapter_model.bin` of older
/// PEFT versions, read without running it), its tensors grouped per module.
///
/// Opening reads the config and the weights' header (or pickle) only; tensor
/// data is read when a merge prepares a module.
public final class LoRAAdapter {
    public static let configFileName = "adapter_config.json"
    public static let weightsFileName = "adapter_model.safetensors"
    static let pickleFileName = "adapter_model.bin"

    /// The folder the adapter was opened from.
    public let path: String
    public let config: LoRAAdapterConfig
    /// The weights file: `adapter_model.safetensors` or `adapter_model.bin`.
    public let weightsPath: String
    /// Modules with LoRA factors, in the order their first tensor appears in the file.
    public let modules: [LoRAModule]
    /// Tensors stored whole (modules_to_save, `base_layer` weights and biases).
    public let replacements: [LoRAReplacement]

    /// The files a merge reads, which its output must not overwrite.
    public var filePaths: [String] { [weightsPath, FileSystem.join(path, Self.configFileName)] }

    /// Opens an adapter folder, or a file in one (its weights or its
    /// `adapter_config.json`). A folder's safetensors weights are preferred
    /// to its `adapter_model.bin`.
    public init(path: String) throws {
        var folder = path
        var weightsPath = FileSystem.join(path, Self.weightsFileName)
        switch FileSystem.kind(of: path) {
        case .missing:
            throw IOError("open", path: path, errno: .noSuchFileOrDirectory)
        case .directory:
            break
        default:
            folder = FileSystem.directoryName(of: path)
            let isWeights = path.hasSuffix(".safetensors") || (try? Model.format(of: path)) == .pytorchFile
            weightsPath = isWeights ? path : FileSystem.join(folder, Self.weightsFileName)
        }
        self.path = folder
        let configPath = FileSystem.join(folder, Self.configFileName)
        // Anything but a folder is opened, so that a named pipe or device is refused as such (`ReadableFile`).
        let readable = { (path: String) in [.file, .other].contains(FileSystem.kind(of: path)) }
        guard readable(configPath) else { throw LoRAMergeError.configMissing(folder: folder) }
        if !readable(weightsPath) {
            weightsPath = FileSystem.join(folder, Self.pickleFileName)
            guard readable(weightsPath) else { throw LoRAMergeError.weightsMissing(folder: folder) }
        }
        let configFile = try ReadableFile(path: configPath)
        guard configFile.size <= LoRAAdapterConfig.maximumFileSize else {
            throw LoRAMergeError.invalidConfig(file: configPath, field: "(document)", reason: "\(configFile.size) bytes is larger than any adapter config should be")
        }
        config = try LoRAAdapterConfig(json: try configFile.readBytes(at: 0, count: Int(configFile.size)), file: configPath)
        self.weightsPath = weightsPath
        (modules, replacements) = try Self.group(try Self.tensors(of: weightsPath), file: weightsPath, config: config)
    }

    /// The tensors of a weights file, safetensors or PyTorch, in file order.
    private static func tensors(of path: String) throws -> [StoredTensor] {
        try Model.open(path).tensors.map { tensor in
            guard let stored = tensor.rawStored else {
                throw LoRAMergeError.unexpectedTensor(file: path, tensor: tensor.name, reason: "a non-contiguous view, which no PEFT adapter saves")
            }
            return stored
        }
    }

    private static func group(_ stored: [StoredTensor], file: String, config: LoRAAdapterConfig) throws -> ([LoRAModule], [LoRAReplacement]) {
        var parts: [String: LoRAModule.Parts] = [:]
        var order: [String] = []
        var replacements: [LoRAReplacement] = []
        var adapterNames: [String: String] = [:]
        for tensor in stored {
            guard let key = LoRATensorKey(tensor.name) else { throw LoRAMergeError.unknownTensorKind(file: file, tensor: tensor.name) }
            // Keys may carry an adapter name, but only one: a file of several adapters is not one adapter.
            if let name = key.adapterName, adapterNames[name] == nil {
                adapterNames[name] = tensor.name
                if adapterNames.count > 1 { throw LoRAMergeError.severalAdapterNames(file: file, tensors: adapterNames.values.sorted()) }
            }
            guard let role = key.role else {
                replacements.append(LoRAReplacement(tensor: tensor, target: key.module))
                continue
            }
            if parts[key.module] == nil { order.append(key.module) }
            var moduleParts = parts[key.module] ?? LoRAModule.Parts()
            if let previous = moduleParts[role] {
                throw LoRAMergeError.conflictingTensors(file: file, baseTensor: key.module, tensors: [previous.name, tensor.name])
            }
            moduleParts[role] = tensor
            parts[key.module] = moduleParts
        }
        let modules = try order.map { name in
            try LoRAModule(name: name, parts: parts[name] ?? LoRAModule.Parts(), config: config, file: file)
        }
        return (modules, replacements)
    }
}

/// One adapted module: its two factors and the optional DoRA magnitude and
/// `lora_B` bias, with the rank, alpha and scale PEFT gives it.
public struct LoRAModule {
    public enum Kind: String, Sendable {
        /// `lora_A.weight` `[r, in]` and `lora_B.weight` `[out, r]` (also 1x1 convolutions).
        case linear
        /// `lora_embedding_A` `[r, vocab]` and `lora_embedding_B` `[dim, r]`.
        case embedding
    }

    /// The module's name in the adapted model, without `base_model.model.`.
    public let name: String
    public let kind: Kind
    /// `lora_A` / `lora_embedding_A`.
    public let down: StoredTensor
    /// `lora_B` / `lora_embedding_B`.
    public let up: StoredTensor
    /// `lora_B.bias` (config `lora_bias`).
    public let upBias: StoredTensor?
    /// `lora_magnitude_vector` (config `use_dora`).
    public let magnitude: StoredTensor?
    /// r and alpha after `rank_pattern` / `alpha_pattern`.
    public let rank: Int
    public let alpha: Double
    /// alpha / r or alpha / sqrt(r).
    public let scale: Double

    /// The adapter-side name of the base tensor the factors change.
    public var weightName: String { name + ".weight" }
    /// The adapter-side name of the bias `lora_B.bias` changes.
    public var biasName: String { name + ".bias" }

    /// The tensors of one module, collected while reading the file.
    struct Parts {
        var tensors: [LoRATensorKey.Role: StoredTensor] = [:]
        subscript(role: LoRATensorKey.Role) -> StoredTensor? {
            get { tensors[role] }
            set { tensors[role] = newValue }
        }
    }

    init(name: String, parts: Parts, config: LoRAAdapterConfig, file: String) throws {
        self.name = name
        let linear = parts[.down] != nil || parts[.up] != nil
        let embedding = parts[.embeddingDown] != nil || parts[.embeddingUp] != nil
        if linear && embedding {
            let names = [parts[.down], parts[.up], parts[.embeddingDown], parts[.embeddingUp]].compactMap { $0?.name }
            throw LoRAMergeError.conflictingTensors(file: file, baseTensor: name + ".weight", tensors: names)
        }
        if embedding {
            kind = .embedding
            guard let a = parts[.embeddingDown] else { throw LoRAMergeError.incompleteModule(file: file, module: name, missing: "lora_embedding_A") }
            guard let b = parts[.embeddingUp] else { throw LoRAMergeError.incompleteModule(file: file, module: name, missing: "lora_embedding_B") }
            down = a
            up = b
        } else {
            kind = .linear
            guard let a = parts[.down] else {
                let present = [parts[.up], parts[.upBias], parts[.magnitude]].compactMap { $0 }
                if present.isEmpty { throw LoRAMergeError.incompleteModule(file: file, module: name, missing: "lora_A.weight") }
                throw LoRAMergeError.incompleteModule(file: file, module: name, missing: "lora_A.weight (found \(present.map(\.name).joined(separator: ", ")))")
            }
            guard let b = parts[.up] else { throw LoRAMergeError.incompleteModule(file: file, module: name, missing: "lora_B.weight") }
            down = a
            up = b
        }
        upBias = parts[.upBias]
        magnitude = parts[.magnitude]
        if let upBias {
            guard kind == .linear, config.loraBias else {
                throw LoRAMergeError.unexpectedTensor(file: file, tensor: upBias.name, reason: "lora_B.bias is only used with \"lora_bias\": true on linear modules (PEFT would not load it)")
            }
        }
        if let magnitude, !config.useDoRA {
            throw LoRAMergeError.unexpectedTensor(file: file, tensor: magnitude.name, reason: "a DoRA magnitude but the config has \"use_dora\": false")
        }
        if magnitude == nil && config.useDoRA {
            throw LoRAMergeError.incompleteModule(file: file, module: name, missing: "lora_magnitude_vector (the config has \"use_dora\": true)")
        }
        rank = try config.rank(forModule: name)
        alpha = try config.alpha(forModule: name)
        scale = config.scale(rank: rank, alpha: alpha)
    }
}

/// A tensor the adapter stores whole and that replaces the base tensor
/// (`modules_to_save`, `base_layer.weight` of resized embeddings,
/// `base_layer.bias` for `bias: "lora_only"` / `"all"`).
public struct LoRAReplacement {
    public let tensor: StoredTensor
    /// The adapter-side name of the base tensor it replaces.
    public let target: String

    /// Whether the tensor is a base layer's (`<module>.base_layer.<name>`),
    /// which loading the adapter puts into the model's own layer, and not a
    /// module of the adapter's own (`modules_to_save`).
    public static func isBaseLayer(_ tensor: StoredTensor) -> Bool {
        LoRATensorKey.namesBaseLayer(tensor.name)
    }
}

/// How PEFT names adapter tensors: `base_model.model.<module>.<role>`.
public struct LoRATensorKey: Equatable {
    public enum Role: String, Hashable, Sendable {
        case down = "lora_A.weight"
        case up = "lora_B.weight"
        case upBias = "lora_B.bias"
        case embeddingDown = "lora_embedding_A"
        case embeddingUp = "lora_embedding_B"
        case magnitude = "lora_magnitude_vector"
    }

    public static let peftPrefix = "base_model.model."

    /// For a factor: the module name; for a whole tensor: the tensor it
    /// replaces. Without `base_model.model.` and without `.base_layer`.
    public let module: String
    /// nil for a whole tensor.
    public let role: Role?
    /// The adapter name a key carries (`lora_A.<name>.weight`,
    /// `modules_to_save.<name>.weight`), as in a PEFT model's own
    /// `state_dict()`; nil for the usual saved keys, which have none.
    public let adapterName: String?

    /// Suffixes in the order they are tried; older PEFT versions stored the
    /// magnitude as `lora_magnitude_vector.weight`.
    private static let suffixes: [(suffix: String, role: Role)] = [
        (".lora_A.weight", .down), (".lora_B.weight", .up), (".lora_B.bias", .upBias),
        (".lora_embedding_A", .embeddingDown), (".lora_embedding_B", .embeddingUp),
        (".lora_magnitude_vector", .magnitude), (".lora_magnitude_vector.weight", .magnitude),
    ]

    /// Classifies an adapter tensor name; nil for names that hold a LoRA
    /// marker in an unknown arrangement (e.g. `lora_A.weight.default`, or
    /// another tuner's tensors) and so cannot be placed safely.
    public init?(_ name: String) {
        let stripped = name.hasPrefix(Self.peftPrefix) ? String(name.dropFirst(Self.peftPrefix.count)) : name
        for (suffix, role) in Self.suffixes where stripped.hasSuffix(suffix) {
            let module = String(stripped.dropLast(suffix.count))
            guard !module.isEmpty, !Self.hasAdapterMarker(module) else { return nil }
            self.module = Self.removingBaseLayer(module)
            self.role = role
            adapterName = nil
            return
        }
        if let named = Self.named(stripped) {
            (module, role, adapterName) = named
            return
        }
        guard !Self.hasAdapterMarker(stripped) else { return nil }
        module = Self.removingBaseLayer(stripped)
        role = nil
        adapterName = nil
    }

    /// A key with the adapter's name after its marker: `<module>.lora_A.<name>.weight`
    /// (and the other factors), `<module>.lora_embedding_A.<name>`,
    /// `<module>.lora_magnitude_vector.<name>[.weight]`, or a whole tensor
    /// `<module>.modules_to_save.<name>.<rest>` (replacing `<module>.<rest>`).
    private static func named(_ name: String) -> (module: String, role: Role?, adapterName: String)? {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard let marker = parts.lastIndex(where: { namedRoles.keys.contains($0) || $0 == "modules_to_save" }),
              marker > 0, marker + 1 < parts.count else { return nil }
        let module = parts[..<marker].joined(separator: "."), adapterName = parts[marker + 1], tail = Array(parts[(marker + 2)...])
        guard !adapterName.isEmpty, !hasAdapterMarker(module) else { return nil }
        if parts[marker] == "modules_to_save" {
            guard !tail.isEmpty, !hasAdapterMarker(tail.joined(separator: ".")) else { return nil }
            return (removingBaseLayer(module + "." + tail.joined(separator: ".")), nil, adapterName)
        }
        guard let role = namedRoles[parts[marker]]?[tail.joined(separator: ".")] else { return nil }
        return (removingBaseLayer(module), role, adapterName)
    }

    /// The role of `<marker>.<name>.<tail>` by marker and tail.
    private static let namedRoles: [String: [String: Role]] = [
        "lora_A": ["weight": .down], "lora_B": ["weight": .up, "bias": .upBias],
        "lora_embedding_A": ["": .embeddingDown], "lora_embedding_B": ["": .embeddingUp],
        "lora_magnitude_vector": ["": .magnitude, "weight": .magnitude],
    ]

    /// Components PEFT uses for adapter state; a whole tensor never has them.
    private static func hasAdapterMarker(_ name: String) -> Bool {
        name.split(separator: ".").contains { component in
            component.hasPrefix("lora_") || component == "modules_to_save" || component == "original_module"
                || component == "token_adapter" || component.hasPrefix("trainable_tokens")
                || component.hasPrefix("hada_") || component.hasPrefix("lokr_") || component.hasPrefix("ia3_")
                || component.hasPrefix("oft_") || component.hasPrefix("boft_") || component.hasPrefix("vera_")
        }
    }

    /// Whether a name passes through a wrapped layer's `base_layer`, which the
    /// name of the base tensor leaves out (`removingBaseLayer`).
    static func namesBaseLayer(_ name: String) -> Bool {
        name.split(separator: ".").contains { $0 == Self.baseLayer }
    }

    private static let baseLayer = "base_layer"

    private static func removingBaseLayer(_ name: String) -> String {
        name.split(separator: ".", omittingEmptySubsequences: false).filter { $0 != Self.baseLayer }.joined(separator: ".")
    }
}
