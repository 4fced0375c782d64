/// Why a PEFT LoRA adapter could not be read or merged. Every case is invalid
/// input (exit 3): the adapter, or the adapter together with this base, breaks
/// a rule PEFT's own `merge_and_unload()` relies on.
public enum LoRAMergeError: QConvError, Equatable {
    /// The adapter folder has no `adapter_config.json`.
    case configMissing(folder: String)
    /// The adapter folder has neither `adapter_model.safetensors` nor `adapter_model.bin`.
    case weightsMissing(folder: String)
    /// `adapter_config.json` is not JSON, or a field has the wrong type or value.
    case invalidConfig(file: String, field: String, reason: String)
    /// `peft_type` is not "LORA" (LoHa, LoKr, IA3, ... merge differently).
    case unsupportedPeftType(file: String, peftType: String)
    /// A config option that changes how the adapter applies and that qconv does not implement.
    case unsupportedFeature(file: String, feature: String, reason: String)
    /// A `rank_pattern` / `alpha_pattern` key that is not a usable regular expression.
    case invalidPattern(file: String, field: String, key: String, reason: String)
    /// A `rank_pattern` / `alpha_pattern` key that Python accepts but that uses
    /// a construct qconv does not match (it matches regular expressions in linear time only).
    case unsupportedPattern(file: String, field: String, key: String, construct: String)
    /// Matching the modules against the pattern keys passed the step budget
    /// (a config built to stall the merge); `key` was being tried.
    case patternsTooCostly(file: String, field: String, key: String, module: String, steps: Int)
    /// A tensor name that is none of the kinds PEFT LoRA adapters store.
    case unknownTensorKind(file: String, tensor: String)
    /// A module missing a tensor it needs: one of its two LoRA factors, or
    /// DoRA's magnitude vector.
    case incompleteModule(file: String, module: String, missing: String)
    /// A tensor the config says cannot be there (e.g. `lora_magnitude_vector` without `use_dora`).
    case unexpectedTensor(file: String, tensor: String, reason: String)
    /// Two adapter tensors claim the same role for one base tensor.
    case conflictingTensors(file: String, baseTensor: String, tensors: [String])
    /// Keys carry two or more adapter names (`lora_A.<name>.weight`): the file holds several adapters.
    case severalAdapterNames(file: String, tensors: [String])
    /// Some adapter tensors do not fit the base: no base tensor, wrong shape,
    /// a dtype that cannot be merged, a convolution kernel larger than 1x1.
    case adapterDoesNotFitBase(adapter: String, base: String, mapping: String, problems: [LoRAFitProblem])
    /// A merged tensor holds NaN or infinity (allowed only with `allowNonfinite`).
    case nonFiniteResult(tensor: String, count: Int)
    /// A merged tensor of a container base to be quantized again holds NaN or
    /// infinity; `index` is the first such element (allowed only with `allowNonfinite`).
    case nonFiniteRequantization(tensor: String, scheme: String, index: Int, value: String)
    /// A merged tensor of a container base to be quantized to int8 again holds
    /// a finite value that overflows float16, which int8 quantizes (allowed
    /// only with `allowNonfinite`, as the infinity it becomes).
    case requantizationOverflow(tensor: String, index: Int, value: String)

    public var category: ErrorCategory { .invalidInput }

    public var description: String {
        switch self {
        case let .configMissing(folder):
            return "\(folder): not a PEFT adapter folder: adapter_config.json is missing"
        case let .weightsMissing(folder):
            return "\(folder): adapter_model.safetensors (or adapter_model.bin) is missing"
        case let .invalidConfig(file, field, reason):
            return "\(file): field '\(field)': \(reason)"
        case let .unsupportedPeftType(file, peftType):
            return "\(file): peft_type '\(peftType)' is not supported; only LORA adapters can be merged"
        case let .unsupportedFeature(file, feature, reason):
            return "\(file): '\(feature)' is not supported: \(reason)"
        case let .invalidPattern(file, field, key, reason):
            return "\(file): \(field) key '\(key)' is not a valid regular expression: \(reason)"
        case let .unsupportedPattern(file, field, key, construct):
            return "\(file): \(field) key '\(key)' uses \(construct), which qconv does not match (it matches literals, ., classes, *, +, ?, {m,n}, |, groups and anchors)"
        case let .patternsTooCostly(file, field, key, module, steps):
            return "\(file): \(field) key '\(key)': matching the adapter's modules against the pattern keys takes more than \(steps) steps (at module '\(module)'); simplify the patterns"
        case let .unknownTensorKind(file, tensor):
            return "\(file): tensor '\(tensor)': not a LoRA factor (lora_A/lora_B/lora_embedding_A/lora_embedding_B/lora_magnitude_vector/lora_B.bias) nor a whole module tensor"
        case let .incompleteModule(file, module, missing):
            return "\(file): module '\(module)': \(missing) is missing"
        case let .unexpectedTensor(file, tensor, reason):
            return "\(file): tensor '\(tensor)': \(reason)"
        case let .severalAdapterNames(file, tensors):
            return "\(file): tensors \(tensors.map { "'\($0)'" }.joined(separator: ", ")) carry different adapter names; the file holds several adapters (save each on its own)"
        case let .conflictingTensors(file, baseTensor, tensors):
            return "\(file): tensors \(tensors.map { "'\($0)'" }.joined(separator: ", ")) all target base tensor '\(baseTensor)'"
        case let .adapterDoesNotFitBase(adapter, base, mapping, problems):
            let count = problems.count
            var lines = ["\(adapter) does not fit \(base) (key mapping: \(mapping)); \(count) problem\(count == 1 ? "" : "s"), nothing written:"]
            lines += problems.map(\.description)
            return lines.joined(separator: "\n")
        case let .nonFiniteResult(tensor, count):
            return "tensor '\(tensor)': the merged values hold \(count) NaN or infinite value\(count == 1 ? "" : "s"); nothing written"
        case let .nonFiniteRequantization(tensor, scheme, index, value):
            return "tensor '\(tensor)': the merged values are not finite: element \(index) is \(value), and quantizing it again to \(scheme) needs finite values; nothing written"
        case let .requantizationOverflow(tensor, index, value):
            return "tensor '\(tensor)': merged element \(index) is \(value), which overflows float16 (largest finite value 65504), and int8 quantizes the values rounded to float16; nothing written"
        }
    }
}

/// One reason an adapter tensor does not fit the base checkpoint.
public enum LoRAFitProblem: Equatable, Sendable, CustomStringConvertible {
    /// The adapter tensor's base tensor (after key mapping) does not exist.
    case noBaseTensor(adapterTensor: String, expected: String)
    /// Shapes disagree; `rule` says which relation was expected.
    case shapeMismatch(adapterTensor: String, shape: [Int], baseTensor: String, baseShape: [Int], rule: String)
    /// The factor's rank differs from the rank the config gives the module.
    case rankMismatch(adapterTensor: String, shape: [Int], configRank: Int)
    /// A convolution whose kernel is not 1x1: its delta is a convolution of the factors.
    case unsupportedConvKernel(baseTensor: String, shape: [Int])
    /// A base tensor to change whose dtype qconv does not merge into (only F32,
    /// F16 and BF16: F64 would lose precision in the float32 arithmetic).
    case unsupportedBaseDType(baseTensor: String, dtype: DType)
    /// An adapter tensor that cannot be decoded to float.
    case unsupportedAdapterDType(adapterTensor: String, dtype: DType)

    public var description: String {
        func shape(_ s: [Int]) -> String { "[" + s.map(String.init).joined(separator: ", ") + "]" }
        switch self {
        case let .noBaseTensor(adapterTensor, expected):
            return "adapter tensor '\(adapterTensor)': no base tensor '\(expected)'"
        case let .shapeMismatch(adapterTensor, s, baseTensor, baseShape, rule):
            return "adapter tensor '\(adapterTensor)' \(shape(s)) does not fit base tensor '\(baseTensor)' \(shape(baseShape)): \(rule)"
        case let .rankMismatch(adapterTensor, s, configRank):
            return "adapter tensor '\(adapterTensor)' \(shape(s)): rank \(s.first ?? 0) where the config (r / rank_pattern) says \(configRank)"
        case let .unsupportedConvKernel(baseTensor, s):
            return "base tensor '\(baseTensor)' \(shape(s)): LoRA on convolutions with kernels larger than 1x1 is not supported"
        case let .unsupportedBaseDType(baseTensor, dtype):
            return "base tensor '\(baseTensor)': dtype \(dtype.rawValue) cannot be merged into (only F32, F16 and BF16)"
        case let .unsupportedAdapterDType(adapterTensor, dtype):
            return "adapter tensor '\(adapterTensor)': dtype \(dtype.rawValue) is not a float type"
        }
    }
}
