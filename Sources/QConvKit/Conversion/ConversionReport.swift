/// What a conversion did, tensor by tensor; printed by the CLI as text or JSON.
public struct ConversionReport {
    /// One tensor of the conversion.
    public struct Tensor {
        /// The source tensor.
        public var info: TensorInfo
        /// How it was stored.
        public var scheme: TensorScheme
        /// The tensor as stored (another dtype for a kept tensor made smaller).
        public var stored: TensorInfo

        public init(info: TensorInfo, scheme: TensorScheme, stored: TensorInfo? = nil) {
            self.info = info
            self.scheme = scheme
            self.stored = stored ?? info
        }

        /// Bytes of all its parts.
        public var storedBytes: UInt64 { scheme.parts(for: stored).reduce(0) { $0 + $1.byteCount } }
        /// int8 only: the number of outlier columns kept in FP16.
        public var outlierColumns: Int? {
            if case .int8(let p) = scheme { return p.outlierColumnCount }
            return nil
        }

        /// Bits stored per element (all parts).
        public var bitsPerWeight: Double {
            info.elementCount > 0 ? Double(storedBytes) * 8 / Double(info.elementCount) : 0
        }
    }

    /// The source checkpoint's path.
    public var input: String
    /// The model written.
    public var output: String
    /// The quantization method and its options.
    public var method: QuantizationMethod
    /// Every tensor, in the source's order.
    public var tensors: [Tensor] = []
    /// Bytes of the source's weight files.
    public var sourceBytes: UInt64 = 0
    /// Bytes written (the container, or every file of the folder).
    public var outputBytes: UInt64 = 0
    /// Names of the files embedded in the container (config.json, ...).
    public var embeddedFiles: [String] = []
    /// Files of the source folder that were not carried, and why.
    public var leftOutFiles: [SideFileScan.LeftOut] = []
    /// What was written: "qconv-container" or "bitsandbytes-folder".
    public var format = ModelFormat.container.name
    /// The files of a folder output (shards, index, config.json, ...), sorted.
    public var files: [String] = []
    /// The source's stored codes were copied into the other layout, not quantized again.
    public var relaid = false
    /// One part of a job array: the shards it wrote.
    public var part: PartShards?
    /// Wall-clock time of the conversion.
    public var seconds: Double = 0

    /// The tensors that were quantized (not stored raw).
    public var quantized: [Tensor] { tensors.filter { $0.scheme.isQuantized } }

    /// Bytes of every tensor in its source dtype (the basis of the size ratio, as in `inspect`).
    public var sourceTensorBytes: UInt64 { tensors.reduce(0) { $0 + UInt64($1.info.byteCount) } }
    /// Bytes stored for every tensor (all parts).
    public var storedTensorBytes: UInt64 { tensors.reduce(0) { $0 + $1.storedBytes } }

    /// Elements of every tensor.
    public var parameterCount: Int { tensors.reduce(0) { $0 + $1.info.elementCount } }
    /// Elements of the quantized tensors.
    public var quantizedParameterCount: Int { quantized.reduce(0) { $0 + $1.info.elementCount } }
    /// int8: outlier columns kept in FP16, and columns, over the quantized tensors.
    public var outlierColumnCounts: (outliers: Int, columns: Int) {
        (quantized.reduce(0) { $0 + ($1.outlierColumns ?? 0) }, quantized.reduce(0) { $0 + $1.info.matrixShape.columns })
    }

    /// Bits per weight over the quantized tensors only.
    public var quantizedBitsPerWeight: Double {
        let q = quantized
        let elements = q.reduce(0) { $0 + $1.info.elementCount }
        return elements > 0 ? Double(q.reduce(0) { $0 + $1.storedBytes }) * 8 / Double(elements) : 0
    }

    /// The JSON report of docs/CLI.md.
    public var json: JSONValue {
        var object = JSONObject()
        object.append("command", .string(method.commandName))
        object.append("input", .string(input))
        object.append("output", .string(output))
        object.append("scheme", .string(method.schemeName))
        switch method {
        case let .fourBit(_, blockSize, doubleQuant):
            object.append("block_size", .int(blockSize))
            object.append("double_quant", .bool(doubleQuant))
        case let .int8(outliers):
            object.append("outlier_rule", .string(outliers.description))
            var threshold: JSONValue = .null, multiple: JSONValue = .null
            switch outliers {
            case .none: break
            case .absolute(let t): threshold = Self.shortest(t)
            case .relativeToRMS(let k): multiple = Self.shortest(k)
            }
            object.append("outlier_threshold", threshold)
            object.append("outlier_rms_multiple", multiple)
        }
        object.append("tensor_count", .int(tensors.count))
        object.append("quantized_tensor_count", .int(quantized.count))
        object.append("raw_tensor_count", .int(tensors.count - quantized.count))
        object.append("parameter_count", .int(parameterCount))
        object.append("quantized_parameter_count", .int(quantizedParameterCount))
        object.append("source_bytes", .uint(sourceBytes))
        object.append("output_bytes", .uint(outputBytes))
        object.append("size_ratio", .double(sourceBytes > 0 ? Double(outputBytes) / Double(sourceBytes) : 0))
        object.append("source_tensor_bytes", .uint(sourceTensorBytes))
        object.append("stored_tensor_bytes", .uint(storedTensorBytes))
        object.append("quantized_bits_per_weight", .double(quantizedBitsPerWeight))
        object.append("embedded_files", .array(embeddedFiles.map { .string($0) }))
        object.append("left_out_files", .array(leftOutFiles.map { .object(["name": .string($0.name), "reason": .string($0.reason)]) }))
        object.append("format", .string(format))
        object.append("files", .array(files.map { .string($0) }))
        object.append("relaid", .bool(relaid))
        object.append("part", part?.json ?? .null)
        object.append("seconds", .double((seconds * 1000).rounded() / 1000))
        object.append("tensors", .array(tensors.map { tensor in
            var row = JSONObject.tensorRow(name: tensor.info.name, dtype: tensor.info.dtype.rawValue, shape: tensor.info.shape)
            row.append("scheme", .string(tensor.scheme.name))
            row.append("source_bytes", .int(tensor.info.byteCount))
            row.append("stored_bytes", .uint(tensor.storedBytes))
            row.append("bits_per_weight", .double(tensor.bitsPerWeight))
            if let outliers = tensor.outlierColumns { row.append("outlier_columns", .int(outliers)) }
            if case .int8(let p) = tensor.scheme { row.append("outlier_threshold", p.outlierThreshold.map { .double($0) } ?? .null) }
            return .object(row)
        }))
        return .object(object)
    }

    /// A float option as the user wrote it: the shortest decimal that reads
    /// back as the same float (`0.06`, not `0.05999999865889549`).
    private static func shortest(_ value: Float) -> JSONValue {
        .double(Double("\(value)") ?? Double(value))
    }
}
