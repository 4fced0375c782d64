/// The names a state-dict pickle may refer to (its `GLOBAL`s): the subset of
/// torch's `weights_only=True` allow-list that state dicts of tensors use.
/// Nothing is ever looked up or called by name: each allowed name maps to
/// one of these cases, which the pickle machine interprets itself.
enum TorchGlobal: Equatable {
    case orderedDict
    /// `torch._utils._rebuild_tensor(storage, offset, size, stride)`.
    case rebuildTensor
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    case rebuildTensorV2
    /// `torch._utils._rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype[, metadata])`:
    /// the newer dtypes (float8, uint16, ...), over an untyped storage.
    case rebuildTensorV3
    /// `torch._utils._rebuild_parameter(data, requires_grad, hooks)`.
    case rebuildParameter
    /// `torch._utils._rebuild_parameter_with_state(data, requires_grad, hooks, state)`.
    case rebuildParameterWithState
    /// `torch._tensor._rebuild_from_type_v2(function, type, args, state)`.
    case rebuildFromType
    /// `torch.Tensor` and `torch.nn.parameter.Parameter`, the types `_rebuild_from_type_v2` may make.
    case tensorType
    /// `torch.FloatStorage` and the other typed storages: a storage of elements of one dtype.
    case typedStorage(DType)
    /// `torch.storage.UntypedStorage`: a storage of bytes.
    case untypedStorage
    /// `torch.float8_e4m3fn` and the other dtypes `_rebuild_tensor_v3` names.
    case dtype(DType)

    /// What a `GLOBAL module name` instruction refers to.
    enum Classification: Equatable {
        case allowed(TorchGlobal)
        /// On torch's allow-list, but not part of a state dict of plain tensors
        /// (a quantized or sparse tensor, a `torch.Size`, ...): what it is.
        case notRead(String)
        /// Anything else: code the pickle would run.
        case refused
    }

    static let storageTypes: [String: DType] = [
        "FloatStorage": .f32, "DoubleStorage": .f64, "HalfStorage": .f16, "BFloat16Storage": .bf16,
        "LongStorage": .i64, "IntStorage": .i32, "ShortStorage": .i16, "CharStorage": .i8, "ByteStorage": .u8,
        "BoolStorage": .bool, "ComplexFloatStorage": .c64,
    ]

    static let dtypes: [String: DType] = [
        "float32": .f32, "float": .f32, "float64": .f64, "double": .f64, "float16": .f16, "half": .f16, "bfloat16": .bf16,
        "int64": .i64, "long": .i64, "int32": .i32, "int": .i32, "int16": .i16, "short": .i16, "int8": .i8, "uint8": .u8,
        "bool": .bool, "complex64": .c64, "uint16": .u16, "uint32": .u32, "uint64": .u64,
        "float8_e4m3fn": .f8e4m3, "float8_e5m2": .f8e5m2, "float8_e4m3fnuz": .f8e4m3fnuz, "float8_e5m2fnuz": .f8e5m2fnuz,
        "float8_e8m0fnu": .f8e8m0,
    ]

    /// Names torch's safe loader allows that a state dict of plain tensors does not use.
    static let notRead: [String: String] = [
        "torch._utils._rebuild_qtensor": "a quantized torch tensor",
        "torch._utils._rebuild_sparse_tensor": "a sparse tensor",
        "torch._utils._rebuild_meta_tensor_no_storage": "a tensor without data",
        "torch._utils._rebuild_wrapper_subclass": "a tensor subclass",
        "torch._utils._rebuild_device_tensor_from_numpy": "a tensor made from a NumPy array",
        "torch._utils._rebuild_device_tensor_from_cpu_tensor": "a device tensor",
        "collections.Counter": "a Counter", "torch.Size": "a torch.Size", "torch.device": "a torch.device",
        "torch.serialization._get_layout": "a tensor layout", "_codecs.encode": "encoded bytes",
        "builtins.bytearray": "a bytearray", "builtins.set": "a set", "builtins.complex": "a complex number",
    ]

    static func classify(module: String, name: String) -> Classification {
        let full = module + "." + name
        switch full {
        case "collections.OrderedDict": return .allowed(.orderedDict)
        case "torch._utils._rebuild_tensor": return .allowed(.rebuildTensor)
        case "torch._utils._rebuild_tensor_v2": return .allowed(.rebuildTensorV2)
        case "torch._utils._rebuild_tensor_v3": return .allowed(.rebuildTensorV3)
        case "torch._utils._rebuild_parameter": return .allowed(.rebuildParameter)
        case "torch._utils._rebuild_parameter_with_state": return .allowed(.rebuildParameterWithState)
        case "torch._tensor._rebuild_from_type_v2": return .allowed(.rebuildFromType)
        case "torch.Tensor", "torch.nn.parameter.Parameter": return .allowed(.tensorType)
        case "torch.storage.UntypedStorage", "torch.UntypedStorage": return .allowed(.untypedStorage)
        default: break
        }
        if let what = notRead[full] { return .notRead(what) }
        guard module == "torch" else { return .refused }
        if let dtype = storageTypes[name] { return .allowed(.typedStorage(dtype)) }
        if let dtype = dtypes[name] { return .allowed(.dtype(dtype)) }
        if name.hasSuffix("Storage") { return .notRead("a storage of a type qconv does not read (\(name))") }
        if name.hasPrefix("per_tensor_") || name.hasPrefix("per_channel_") { return .notRead("a quantized torch tensor") }
        if name.hasPrefix("complex") || name.hasPrefix("qint") || name.hasPrefix("quint") || name.hasPrefix("int") || name.hasPrefix("uint")
            || name.hasPrefix("float") || name.hasPrefix("bits") {
            return .notRead("a tensor of dtype torch.\(name)")
        }
        return .refused
    }

    /// The name as Python 3 spells it (`posix.system` is `os.system`,
    /// `__builtin__.eval` is `builtins.eval`), for messages.
    static func displayName(module: String, name: String) -> String {
        switch module {
        case "posix", "nt": return "os.\(name)"
        case "__builtin__": return "builtins.\(name)"
        default: return "\(module).\(name)"
        }
    }
}
