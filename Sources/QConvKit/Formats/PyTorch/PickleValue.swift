/// A value on the pickle machine's stack. Tuples, lists and dicts live in
/// the machine's arena and are referred to by index, so that no value is
/// recursive: a deeply nested or self-referencing pickle costs no stack
/// when it is built, inspected or freed.
enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    /// A tuple, list or dict: an index into `PickleMachine.objects`.
    case object(Int)
    case global(TorchGlobal)
    /// What `BINPERSID` made of a storage record.
    case storage(TorchStorage)
    /// What a rebuild function made.
    case tensor(TorchTensor)
}

/// A container of the arena.
enum PickleObject {
    case tuple([PickleValue])
    case list([PickleValue])
    /// Entries in insertion order (an `OrderedDict` is a dict too).
    case dict([(key: PickleValue, value: PickleValue)])
}

/// A storage as a pickle refers to it: `('storage', type, key, location, count)`.
struct TorchStorage: Equatable {
    enum Kind: Equatable {
        /// `torch.FloatStorage` and the like: `count` elements of this dtype.
        case typed(DType)
        /// `torch.storage.UntypedStorage`: `count` bytes.
        case untyped
    }

    let key: String
    let kind: Kind
    let count: Int

    /// The bytes the record says the storage holds (nil when it overflows).
    var byteCount: Int? {
        switch kind {
        case .typed(let dtype): return QConvKit.byteCount(of: dtype, elementCount: count)
        case .untyped: return count
        }
    }
}

/// A tensor as a rebuild function describes it: a view of a storage.
/// Nothing here is validated yet; `TorchStateDict` checks it against its storage.
struct TorchTensor {
    let storage: TorchStorage
    let dtype: DType
    /// In elements of `dtype`.
    let offset: Int
    let shape: [Int]
    /// In elements of `dtype`.
    let strides: [Int]
}

extension PickleValue {
    /// What the value is, for messages ("a string", "an int", ...).
    func kindDescription(in objects: [PickleObject]) -> String {
        switch self {
        case .none: return "None"
        case .bool: return "a bool"
        case .int: return "an int"
        case .float: return "a float"
        case .string: return "a string"
        case .bytes: return "bytes"
        case .object(let index):
            switch objects[index] {
            case .tuple: return "a tuple"
            case .list: return "a list"
            case .dict: return "a dict"
            }
        case .global: return "a torch type or function"
        case .storage: return "a storage"
        case .tensor: return "a tensor"
        }
    }
}
