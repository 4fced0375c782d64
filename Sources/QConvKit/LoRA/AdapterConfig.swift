/// The parts of a PEFT `adapter_config.json` that decide how a LoRA adapter
/// merges: rank, alpha, their per-module patterns, the scaling rule and the
/// layout options. Options that would change the arithmetic in ways qconv
/// does not implement are refused when parsing, never ignored.
public struct LoRAAdapterConfig {
    /// The file the config was read from (for messages).
    public let file: String
    public let peftType: String
    /// `r`: the rank of every module no `rank_pattern` key matches.
    public let rank: Int
    /// `lora_alpha`: the alpha of every module no `alpha_pattern` key matches.
    public let alpha: Double
    /// `use_rslora`: scale is alpha / sqrt(r) instead of alpha / r.
    public let useRSLoRA: Bool
    /// `use_dora`: every module carries a `lora_magnitude_vector`.
    public let useDoRA: Bool
    /// `fan_in_fan_out`: the base weights are stored `[in, out]` (GPT-2 Conv1D).
    public let fanInFanOut: Bool
    /// `lora_bias`: `lora_B` has a bias that is added to the base bias.
    public let loraBias: Bool
    /// `bias`: "none", "all" or "lora_only" (which base biases the adapter stores).
    public let bias: String
    /// `modules_to_save`: modules stored whole in the adapter.
    public let modulesToSave: [String]
    /// `rank_pattern` in file order (a later duplicate key keeps the first key's place, as in Python).
    public let rankPattern: [(key: String, rank: Int)]
    /// `alpha_pattern` in file order.
    public let alphaPattern: [(key: String, alpha: Double)]

    /// The keys compiled for lookups, which share one budget (`ModulePatterns`).
    private let rankKeys: ModulePatterns
    private let alphaKeys: ModulePatterns
    private let budget: PatternBudget

    /// The largest `adapter_config.json` read (real ones are a few kilobytes).
    public static let maximumFileSize = 4 << 20
    /// The most keys `rank_pattern` and `alpha_pattern` may hold together.
    public static let maximumPatternKeys = 65_536

    /// Parses `adapter_config.json`; `file` names it in errors.
    public init(json bytes: [UInt8], file: String) throws {
        try self.init(json: bytes, file: file, patternSteps: PatternBudget.defaultSteps)
    }

    /// `patternSteps`: the step budget of the pattern lookups (smaller in tests).
    init(json bytes: [UInt8], file: String, patternSteps: Int) throws {
        self.file = file
        budget = PatternBudget(steps: patternSteps)
        let root: JSONValue
        do { root = try JSONParser.parse(bytes) } catch let error as JSONParseError {
            throw LoRAMergeError.invalidConfig(file: file, field: "(document)", reason: "not valid JSON: \(error)")
        }
        guard let object = root.objectValue else {
            throw LoRAMergeError.invalidConfig(file: file, field: "(document)", reason: "must be a JSON object, found \(root.kindDescription)")
        }
        let fields = ConfigFields(object: object, file: file)

        guard let peftType = try fields.string("peft_type") else {
            throw LoRAMergeError.invalidConfig(file: file, field: "peft_type", reason: "missing; a PEFT adapter config names its peft_type")
        }
        guard peftType == "LORA" else { throw LoRAMergeError.unsupportedPeftType(file: file, peftType: peftType) }
        self.peftType = peftType

        // PEFT's defaults for fields an older or hand-written config leaves out.
        rank = try fields.positiveInteger("r") ?? 8
        alpha = try fields.number("lora_alpha") ?? 8
        useRSLoRA = try fields.bool("use_rslora") ?? false
        useDoRA = try fields.bool("use_dora") ?? false
        fanInFanOut = try fields.bool("fan_in_fan_out") ?? false
        loraBias = try fields.bool("lora_bias") ?? false
        bias = try fields.string("bias") ?? "none"
        guard ["none", "all", "lora_only"].contains(bias) else {
            throw LoRAMergeError.invalidConfig(file: file, field: "bias", reason: "must be \"none\", \"all\" or \"lora_only\", found \"\(bias)\"")
        }
        modulesToSave = try fields.stringList("modules_to_save")

        var ranks: [(key: String, rank: Int)] = []
        for (key, value) in try fields.patternMap("rank_pattern") {
            guard let number = value.numberValue?.intValue, number > 0 else {
                throw LoRAMergeError.invalidConfig(file: file, field: "rank_pattern", reason: "value of '\(key)' must be a positive integer, found \(Self.render(value))")
            }
            ranks.append((key, number))
        }
        var alphas: [(key: String, alpha: Double)] = []
        for (key, value) in try fields.patternMap("alpha_pattern") {
            guard let number = value.numberValue?.doubleValue, number.isFinite else {
                throw LoRAMergeError.invalidConfig(file: file, field: "alpha_pattern", reason: "value of '\(key)' must be a number, found \(Self.render(value))")
            }
            alphas.append((key, number))
        }
        rankPattern = ranks
        alphaPattern = alphas
        guard ranks.count + alphas.count <= Self.maximumPatternKeys else {
            throw LoRAMergeError.invalidConfig(file: file, field: ranks.count > alphas.count ? "rank_pattern" : "alpha_pattern",
                                               reason: "rank_pattern and alpha_pattern hold \(ranks.count + alphas.count) keys; qconv reads at most \(Self.maximumPatternKeys)")
        }
        rankKeys = try Self.compile(ranks.map(\.key), field: "rank_pattern", file: file)
        alphaKeys = try Self.compile(alphas.map(\.key), field: "alpha_pattern", file: file)

        try Self.refuseUnsupportedFeatures(object, file: file)
    }

    /// The rank PEFT gives `module` (its name without `base_model.model.`):
    /// the first `rank_pattern` key whose regex `(.*\.)?(KEY)$` matches, else `r`.
    ///
    /// - Throws: `LoRAMergeError.patternsTooCostly` when the lookups of this
    ///   config together pass their step budget (see `ModulePatterns`).
    public func rank(forModule module: String) throws -> Int {
        try firstMatch(module, in: rankKeys).map { rankPattern[$0].rank } ?? rank
    }

    /// The alpha PEFT gives `module`, matched like `rank(forModule:)`.
    public func alpha(forModule module: String) throws -> Double {
        try firstMatch(module, in: alphaKeys).map { alphaPattern[$0].alpha } ?? alpha
    }

    private func firstMatch(_ module: String, in keys: ModulePatterns) throws -> Int? {
        do { return try keys.firstMatch(module, budget: budget) } catch let exhausted as PatternBudget.Exhausted {
            throw LoRAMergeError.patternsTooCostly(file: file, field: keys.field, key: exhausted.key, module: module, steps: budget.steps)
        }
    }

    private static func compile(_ keys: [String], field: String, file: String) throws -> ModulePatterns {
        try ModulePatterns(field: field, keys: keys) { key, problem in
            switch problem {
            case .invalid(let reason): return LoRAMergeError.invalidPattern(file: file, field: field, key: key, reason: reason)
            case .unsupported(let what): return LoRAMergeError.unsupportedPattern(file: file, field: field, key: key, construct: what)
            }
        }
    }

    /// PEFT's scaling: alpha / r, or alpha / sqrt(r) with `use_rslora`,
    /// computed in double precision as Python does, times `multiplier`
    /// (PEFT's `scale_layer`). The merge rounds it to float32 once, as torch
    /// does when it multiplies a float32 tensor by a Python float.
    public func scale(rank: Int, alpha: Double, multiplier: Double = 1) -> Double {
        let r = Double(rank)
        return multiplier * alpha / (useRSLoRA ? r.squareRoot() : r)
    }

    /// Options that select a LoRA variant or change the model's structure.
    /// `init_lora_weights` schemes (PiSSA, OLoRA, LoftQ, ...) only decide the
    /// starting point of training and merge like plain LoRA, so they pass.
    private static let unsupportedOptions: [(field: String, reason: String)] = [
        ("alora_invocation_tokens", "aLoRA adapters activate per token and cannot be merged"),
        ("arrow_config", "Arrow routing mixes several adapters per token"),
        ("use_bdlora", "block-diagonal LoRA (BD-LoRA) stores its factors in another layout"),
        ("velora_config", "VeLoRA changes the forward pass"),
        ("monteclora_config", "MonteCLoRA samples its factors"),
        ("kasa_config", "KaSA adds a singular-value term to the delta"),
        ("use_qalora", "QA-LoRA pools the inputs before lora_A"),
        ("layer_replication", "layer replication changes the model's structure"),
        ("trainable_token_indices", "trainable token deltas are not merged by qconv"),
        ("target_parameters", "LoRA on bare parameters (e.g. MoE experts) is not merged by qconv"),
        ("megatron_config", "Megatron-parallel layers are not supported"),
    ]

    private static func refuseUnsupportedFeatures(_ object: JSONObject, file: String) throws {
        for option in unsupportedOptions {
            if let value = object[option.field], isTruthy(value) {
                throw LoRAMergeError.unsupportedFeature(file: file, feature: option.field, reason: option.reason)
            }
        }
        if object["init_lora_weights"]?.stringValue?.lowercased() == "mica" {
            throw LoRAMergeError.unsupportedFeature(file: file, feature: "init_lora_weights", reason: "MiCA is a LoRA variant with its own merge")
        }
    }

    /// Python's truthiness, which is what PEFT tests these options with.
    private static func isTruthy(_ value: JSONValue) -> Bool {
        switch value {
        case .null: return false
        case .bool(let b): return b
        case .number(let n): return (n.doubleValue ?? 1) != 0
        case .string(let s): return !s.isEmpty
        case .array(let a): return !a.isEmpty
        case .object: return true
        }
    }

    static func render(_ value: JSONValue) -> String { JSONWriter.serialize(value) }
}

/// Typed access to the config's fields with errors that name the field.
private struct ConfigFields {
    let object: JSONObject
    let file: String

    /// The value, or nil when absent or JSON null.
    func value(_ field: String) -> JSONValue? {
        guard let value = object[field], value != .null else { return nil }
        return value
    }

    func wrongType(_ field: String, _ expected: String, _ value: JSONValue) -> LoRAMergeError {
        .invalidConfig(file: file, field: field, reason: "must be \(expected), found \(LoRAAdapterConfig.render(value))")
    }

    func string(_ field: String) throws -> String? {
        guard let value = value(field) else { return nil }
        guard let string = value.stringValue else { throw wrongType(field, "a string", value) }
        return string
    }

    func bool(_ field: String) throws -> Bool? {
        guard let value = value(field) else { return nil }
        guard let bool = value.boolValue else { throw wrongType(field, "true or false", value) }
        return bool
    }

    func number(_ field: String) throws -> Double? {
        guard let value = value(field) else { return nil }
        guard let number = value.numberValue?.doubleValue, number.isFinite else { throw wrongType(field, "a number", value) }
        return number
    }

    func positiveInteger(_ field: String) throws -> Int? {
        guard let value = value(field) else { return nil }
        guard let number = value.numberValue?.intValue, number > 0 else { throw wrongType(field, "a positive integer", value) }
        return number
    }

    func stringList(_ field: String) throws -> [String] {
        guard let value = value(field) else { return [] }
        if let single = value.stringValue { return [single] }
        guard let array = value.arrayValue else { throw wrongType(field, "a list of strings", value) }
        return try array.map { element in
            guard let string = element.stringValue else { throw wrongType(field, "a list of strings", value) }
            return string
        }
    }

    /// A pattern map's members in the order a Python dict built from the file
    /// has them: first occurrence decides the place, the last one the value.
    func patternMap(_ field: String) throws -> [(key: String, value: JSONValue)] {
        guard let value = value(field) else { return [] }
        guard let map = value.objectValue else { throw wrongType(field, "an object", value) }
        var members: [(key: String, value: JSONValue)] = []
        var position: [String: Int] = [:]
        for (key, element) in map.members {
            if let index = position[key] {
                members[index].value = element
            } else {
                position[key] = members.count
                members.append((key, element))
            }
        }
        return members
    }
}
