/// What a quantizing conversion would do, from the headers alone
/// (a dry run of `to-*`): per tensor, what it becomes and why, and the sizes.
public struct ConversionPreview {
    public struct Tensor {
        /// The source tensor.
        public let info: TensorInfo
        public let decision: TensorSelection.Decision
        /// The scheme it would be stored with (parameters known only once
        /// its values are seen are placeholders).
        public let scheme: TensorScheme
        /// The dtype it would be stored in (a kept tensor's may be smaller).
        public let storedDType: DType
        /// Bytes it would take: exact, except int8 outlier columns, not counted.
        public let projectedBytes: UInt64

        public var bitsPerWeight: Double {
            info.elementCount > 0 ? Double(projectedBytes) * 8 / Double(info.elementCount) : 0
        }
    }

    public let input: String
    public let method: QuantizationMethod
    public let tensors: [Tensor]

    public var quantized: [Tensor] { tensors.filter { $0.decision.quantizes } }
    public var sourceTensorBytes: UInt64 { tensors.reduce(0) { $0 + UInt64($1.info.byteCount) } }
    public var projectedTensorBytes: UInt64 { tensors.reduce(0) { $0 + $1.projectedBytes } }

    /// Whether int8 outlier columns, unknown before the values are seen, would add to the sizes.
    public var outliersUncounted: Bool {
        if case .int8(let rule) = method { return rule != .none }
        return false
    }

    public var quantizedBitsPerWeight: Double {
        let q = quantized
        let elements = q.reduce(0) { $0 + $1.info.elementCount }
        return elements > 0 ? Double(q.reduce(UInt64(0)) { $0 + $1.projectedBytes }) * 8 / Double(elements) : 0
    }

    /// `{"command", "input", "dry_run": true, "scheme", "tensor_count", "quantized_tensor_count",
    /// "source_tensor_bytes", "projected_tensor_bytes", "outliers_uncounted", "quantized_bits_per_weight", "tensors": [...]}`.
    public var json: JSONValue {
        var object = JSONObject()
        object.append("command", .string(method.commandName))
        object.append("input", .string(input))
        object.append("dry_run", .bool(true))
        object.append("scheme", .string(method.schemeName))
        object.append("tensor_count", .int(tensors.count))
        object.append("quantized_tensor_count", .int(quantized.count))
        object.append("source_tensor_bytes", .uint(sourceTensorBytes))
        object.append("projected_tensor_bytes", .uint(projectedTensorBytes))
        object.append("outliers_uncounted", .bool(outliersUncounted))
        object.append("quantized_bits_per_weight", .double(quantizedBitsPerWeight))
        object.append("tensors", .array(tensors.map { tensor in
            var row = JSONObject.tensorRow(name: tensor.info.name, dtype: tensor.info.dtype.rawValue, shape: tensor.info.shape)
            row.append("scheme", .string(tensor.scheme.name))
            row.append("stored_dtype", .string(tensor.storedDType.rawValue))
            switch tensor.decision {
            case .quantize(let reason): row.append("action", "quantize"); row.append("reason", .string(reason.rawValue))
            case .keep(let reason): row.append("action", "keep"); row.append("reason", .string(reason.rawValue))
            }
            row.append("source_bytes", .int(tensor.info.byteCount))
            row.append("projected_bytes", .uint(tensor.projectedBytes))
            row.append("bits_per_weight", .double(tensor.bitsPerWeight))
            return .object(row)
        }))
        return .object(object)
    }
}

extension Quantizer {
    /// What `convert` would do with `source`, reading no tensor data; the
    /// same checks as `convert` (a quantized source, a selection that names nothing).
    public static func preview(_ source: Model, options: Options) throws -> ConversionPreview {
        try check(source, options: options)
        let tensors = zip(source.tensors, plan(source, options: options)).map { tensor, step in
            let scheme = step.plannedScheme
            return ConversionPreview.Tensor(info: tensor.info, decision: options.selection.decision(for: tensor.info), scheme: scheme,
                                            storedDType: step.output.dtype,
                                            projectedBytes: scheme.parts(for: step.output).reduce(0) { $0 + $1.byteCount })
        }
        return ConversionPreview(input: source.path, method: options.method, tensors: tensors)
    }
}
