/// What a conversion did, tensor by tensor; printed by the CLI as text or JSON.
public struct ConversionReport {
    public struct Tensor {
        public var info: TensorInfo
        public var scheme: ContainerScheme
        public var storedBytes: UInt64
        public var outlierColumns: Int?

        /// Bits stored per element (all parts).
        public var bitsPerWeight: Double {
            info.elementCount > 0 ? Double(storedBytes) * 8 / Double(info.elementCount) : 0
        }
    }

    public var input: String
    public var output: String
    public var method: QuantizationMethod
    public var tensors: [Tensor] = []
    public var sourceBytes: UInt64 = 0
    public var outputBytes: UInt64 = 0
    public var embeddedFiles: [String] = []
    public var seconds: Double = 0

    public var quantized: [Tensor] { tensors.filter { $0.scheme != .raw } }

    /// Bits per weight over the quantized tensors only.
    public var quantizedBitsPerWeight: Double {
        let q = quantized
        let elements = q.reduce(0) { $0 + $1.info.elementCount }
        return elements > 0 ? Double(q.reduce(0) { $0 + $1.storedBytes }) * 8 / Double(elements) : 0
    }

    public var json: JSONValue {
        var object = JSONObject()
        object.append("command", .string(method.commandName))
        object.append("input", .string(input))
        object.append("output", .string(output))
        object.append("scheme", .string(method.scheme.rawValue))
        switch method {
        case let .fourBit(_, blockSize, doubleQuant):
            object.append("block_size", .int(blockSize))
            object.append("double_quant", .bool(doubleQuant))
        case let .int8(outliers):
            object.append("outlier_rule", .string(outliers.description))
        }
        object.append("tensor_count", .int(tensors.count))
        object.append("quantized_tensor_count", .int(quantized.count))
        object.append("raw_tensor_count", .int(tensors.count - quantized.count))
        object.append("parameter_count", .int(tensors.reduce(0) { $0 + $1.info.elementCount }))
        object.append("quantized_parameter_count", .int(quantized.reduce(0) { $0 + $1.info.elementCount }))
        object.append("source_bytes", .uint(sourceBytes))
        object.append("output_bytes", .uint(outputBytes))
        object.append("size_ratio", .double(sourceBytes > 0 ? Double(outputBytes) / Double(sourceBytes) : 0))
        object.append("quantized_bits_per_weight", .double(quantizedBitsPerWeight))
        object.append("embedded_files", .array(embeddedFiles.map { .string($0) }))
        object.append("seconds", .double((seconds * 1000).rounded() / 1000))
        object.append("tensors", .array(tensors.map { tensor in
            var row = JSONObject()
            row.append("name", .string(tensor.info.name))
            row.append("dtype", .string(tensor.info.dtype.rawValue))
            row.append("shape", .array(tensor.info.shape.map { .int($0) }))
            row.append("scheme", .string(tensor.scheme.rawValue))
            row.append("source_bytes", .int(tensor.info.byteCount))
            row.append("stored_bytes", .uint(tensor.storedBytes))
            row.append("bits_per_weight", .double(tensor.bitsPerWeight))
            if let outliers = tensor.outlierColumns { row.append("outlier_columns", .int(outliers)) }
            return .object(row)
        }))
        return .object(object)
    }
}
