/// The calls a state-dict pickle makes (`REDUCE`) and the storage records
/// it refers to (`BINPERSID`), interpreted: each allowed torch function is
/// matched by its case, its arguments checked for their types, and a value
/// built in its place. Whether a view fits its storage is `TorchStateDict`'s business.
extension PickleMachine {
    /// A storage record: `('storage', type, key, location, count)`.
    func storage(_ record: PickleValue) throws -> TorchStorage {
        let items = try tupleItems(record, for: "BINPERSID")
        guard items.count == 5 else { throw invalid("a storage record", "has \(items.count) fields, expected 5") }
        switch items[0] {
        case .string("storage"): break
        case .bytes(let tag) where tag == Array("storage".utf8): break
        default: throw invalid("a storage record", "is not a storage (\(items[0].kindDescription(in: objects)) as its tag)")
        }
        let kind: TorchStorage.Kind
        switch items[1] {
        case .global(.typedStorage(let dtype)): kind = .typed(dtype)
        case .global(.untypedStorage): kind = .untyped
        default: throw invalid("a storage record", "names no storage type")
        }
        guard case .string(let key) = items[2] else { throw invalid("a storage record", "has no key") }
        guard case .int(let count) = items[4], count >= 0 else { throw invalid("storage '\(key)'", "has no element count") }
        return TorchStorage(key: key, kind: kind, count: count)
    }

    /// What an allowed function returns for `arguments`.
    mutating func call(_ function: TorchGlobal, with arguments: [PickleValue]) throws -> PickleValue {
        switch function {
        case .orderedDict:
            guard arguments.isEmpty else { throw invalid("OrderedDict()", "takes no arguments here") }
            return make(.dict([]))
        case .rebuildTensor, .rebuildTensorV2, .rebuildTensorV3, .rebuildParameter, .rebuildParameterWithState:
            return .tensor(try tensor(function, arguments))
        case .rebuildFromType:
            // (function, type, args, state): a tensor or Parameter with attributes, which are dropped.
            guard arguments.count == 4 else { throw invalid("_rebuild_from_type_v2", "takes 4 arguments, got \(arguments.count)") }
            guard case .global(let inner) = arguments[0], inner != .rebuildFromType else {
                throw invalid("_rebuild_from_type_v2", "must rebuild a tensor")
            }
            guard case .global(.tensorType) = arguments[1] else { throw invalid("_rebuild_from_type_v2", "makes a type other than Tensor or Parameter") }
            return .tensor(try tensor(inner, try tupleItems(arguments[2], for: "_rebuild_from_type_v2")))
        case .tensorType, .typedStorage, .untypedStorage, .dtype:
            throw invalid("a call", "calls a type qconv does not construct")
        }
    }

    /// A tensor rebuild function's result.
    private func tensor(_ function: TorchGlobal, _ arguments: [PickleValue]) throws -> TorchTensor {
        switch function {
        case .rebuildParameter, .rebuildParameterWithState:
            let expected = function == .rebuildParameter ? 3 : 4
            guard arguments.count == expected else { throw invalid("_rebuild_parameter", "takes \(expected) arguments, got \(arguments.count)") }
            guard case .tensor(let data) = arguments[0] else { throw invalid("_rebuild_parameter", "wraps no tensor") }
            return data
        case .rebuildTensor:
            guard arguments.count == 4 else { throw invalid("_rebuild_tensor", "takes 4 arguments, got \(arguments.count)") }
            return try view(arguments, dtype: nil, function: "_rebuild_tensor")
        case .rebuildTensorV2:
            guard arguments.count == 6 || arguments.count == 7 else { throw invalid("_rebuild_tensor_v2", "takes 6 or 7 arguments, got \(arguments.count)") }
            return try view(arguments, dtype: nil, function: "_rebuild_tensor_v2")
        case .rebuildTensorV3:
            guard arguments.count == 7 || arguments.count == 8 else { throw invalid("_rebuild_tensor_v3", "takes 7 or 8 arguments, got \(arguments.count)") }
            guard case .global(.dtype(let dtype)) = arguments[6] else { throw invalid("_rebuild_tensor_v3", "names no dtype") }
            return try view(arguments, dtype: dtype, function: "_rebuild_tensor_v3")
        case .orderedDict, .rebuildFromType, .tensorType, .typedStorage, .untypedStorage, .dtype:
            throw invalid("_rebuild_from_type_v2", "must rebuild a tensor")
        }
    }

    /// `(storage, offset, size, stride, ...)` as a view of the storage.
    private func view(_ arguments: [PickleValue], dtype: DType?, function: String) throws -> TorchTensor {
        guard case .storage(let storage) = arguments[0] else { throw invalid(function, "has no storage as its first argument") }
        guard case .int(let offset) = arguments[1] else { throw invalid(function, "has no storage offset") }
        let shape = try integers(arguments[2], function: function, what: "size")
        let strides = try integers(arguments[3], function: function, what: "stride")
        let elementType: DType
        switch (storage.kind, dtype) {
        case (.typed(let stored), nil): elementType = stored
        case (.typed(let stored), .some(let named)):
            guard stored == named else { throw invalid(function, "names dtype \(named.rawValue) for a storage of \(stored.rawValue)") }
            elementType = stored
        case (.untyped, .some(let named)): elementType = named
        case (.untyped, nil): throw invalid(function, "has an untyped storage and no dtype")
        }
        return TorchTensor(storage: storage, dtype: elementType, offset: offset, shape: shape, strides: strides)
    }

    private func integers(_ value: PickleValue, function: String, what: String) throws -> [Int] {
        try tupleItems(value, for: function).map { item in
            guard case .int(let n) = item else { throw invalid(function, "has a \(what) that is not a tuple of integers") }
            return n
        }
    }

    private func invalid(_ what: String, _ reason: String) -> TorchCheckpointError {
        TorchCheckpointError.invalidCall(file: file, position: start, function: what, reason: reason)
    }
}
