/// What `qconv inspect` reports about a checkpoint or a container. The CLI
/// renders it as text or as the JSON documented in docs/CLI.md (`json`).
public struct InspectionReport {
    public struct File {
        public var name: String
        public var bytes: UInt64
        public var tensorCount: Int
    }

    public struct Tensor {
        public var name: String
        public var dtype: String
        public var shape: [Int]
        public var parameters: Int
        /// Bytes stored for this tensor (all parts, for a quantized format).
        public var bytes: UInt64
        public var file: String
        /// Quantized formats only: the scheme, its bits per weight, outlier columns (int8),
        /// block size and double quantization (4-bit).
        public var scheme: String? = nil
        public var blockSize: Int? = nil
        public var doubleQuant: Bool? = nil
        public var bitsPerWeight: Double? = nil
        public var outlierColumns: Int? = nil
        /// FP8 weights: their values' dtype and their scale tensor, part of the tensor.
        public var fp8: ScaledFP8Parameters? = nil
        public var statistics: TensorStatistics? = nil
    }

    public struct DTypeTotal {
        public var tensorCount = 0
        public var parameters = 0
        public var bytes: UInt64 = 0
    }

    public var path: String
    /// "safetensors", "safetensors-folder", "safetensors-sharded-folder" or "qconv-container".
    public var format: String
    public var files: [File] = []
    public var auxiliaryFiles: [String] = []
    public var metadata: [(key: String, value: String)] = []
    public var tensors: [Tensor] = []
    /// Container facts: format version, writer, options, sizes.
    public var container: ContainerSummary?
    /// bitsandbytes checkpoint facts: schemes, sizes, quantization_config.
    public var bitsandbytes: BitsandbytesSummary?

    public struct BitsandbytesSummary {
        /// Weight count per scheme with its parameters ("nf4, block size 64, double quant"), in order of first appearance.
        public var schemes: [(scheme: String, count: Int)]
        public var sourceTensorBytes: UInt64
        public var bitsPerWeight: Double
        public var quantizedBitsPerWeight: Double
        /// config.json's quantization_config, when there is one.
        public var quantizationConfig: JSONValue?

        public var json: JSONValue {
            var object = JSONObject()
            object.append("schemes", .object(JSONObject(schemes.map { ($0.scheme, JSONValue.int($0.count)) })))
            object.append("source_tensor_bytes", .uint(sourceTensorBytes))
            object.append("bits_per_weight", .double(bitsPerWeight))
            object.append("quantized_bits_per_weight", .double(quantizedBitsPerWeight))
            object.append("quantization_config", quantizationConfig ?? .null)
            return .object(object)
        }
    }

    public struct ContainerSummary {
        public var version: UInt32
        public var writtenBy: String?
        /// The options of the command that wrote it, as recorded.
        public var options: JSONValue?
        /// Tensor count per scheme, in scheme order.
        public var schemes: [(scheme: String, count: Int)]
        public var sourceTensorBytes: UInt64
        public var bitsPerWeight: Double
        public var quantizedBitsPerWeight: Double

        public var json: JSONValue {
            var object = JSONObject()
            object.append("version", .uint(UInt64(version)))
            object.append("written_by", writtenBy.map { .string($0) } ?? .null)
            object.append("options", options ?? .null)
            object.append("schemes", .object(JSONObject(schemes.map { ($0.scheme, JSONValue.int($0.count)) })))
            object.append("source_tensor_bytes", .uint(sourceTensorBytes))
            object.append("bits_per_weight", .double(bitsPerWeight))
            object.append("quantized_bits_per_weight", .double(quantizedBitsPerWeight))
            return .object(object)
        }
    }

    public init(path: String, format: String) {
        self.path = path
        self.format = format
    }

    public var tensorCount: Int { tensors.count }
    public var parameterCount: Int { tensors.reduce(0) { $0 + $1.parameters } }
    public var tensorBytes: UInt64 { tensors.reduce(0) { $0 + $1.bytes } }
    public var fileBytes: UInt64 { files.reduce(0) { $0 + $1.bytes } }

    /// Totals per dtype, in order of first appearance.
    public var dtypeTotals: [(dtype: String, total: DTypeTotal)] {
        var order: [String] = []
        var totals: [String: DTypeTotal] = [:]
        for tensor in tensors {
            if totals[tensor.dtype] == nil { order.append(tensor.dtype) }
            totals[tensor.dtype, default: DTypeTotal()].tensorCount += 1
            totals[tensor.dtype]!.parameters += tensor.parameters
            totals[tensor.dtype]!.bytes += tensor.bytes
        }
        return order.map { ($0, totals[$0]!) }
    }

    /// The stable JSON object documented in docs/CLI.md. `tensors` is included
    /// when `includeTensors` is set.
    public func json(includeTensors: Bool) -> JSONValue {
        var object = JSONObject()
        object.append("path", .string(path))
        object.append("format", .string(format))
        object.append("tensor_count", .int(tensorCount))
        object.append("parameter_count", .int(parameterCount))
        object.append("tensor_bytes", .uint(tensorBytes))
        object.append("file_bytes", .uint(fileBytes))
        object.append("files", .array(files.map {
            .object(["name": .string($0.name), "bytes": .uint($0.bytes), "tensor_count": .int($0.tensorCount)])
        }))
        object.append("auxiliary_files", .array(auxiliaryFiles.map { .string($0) }))
        var dtypes = JSONObject()
        for (dtype, total) in dtypeTotals {
            dtypes.append(dtype, .object([
                "tensor_count": .int(total.tensorCount), "parameter_count": .int(total.parameters), "bytes": .uint(total.bytes),
            ]))
        }
        object.append("dtypes", .object(dtypes))
        object.append("metadata", .object(JSONObject(metadata.map { ($0.key, .string($0.value)) })))
        if let container { object.append("container", container.json) }
        if let bitsandbytes { object.append("bitsandbytes", bitsandbytes.json) }
        if includeTensors {
            object.append("tensors", .array(tensors.map { tensor in
                var row = JSONObject.tensorRow(name: tensor.name, dtype: tensor.dtype, shape: tensor.shape)
                row.append("parameters", .int(tensor.parameters))
                row.append("bytes", .uint(tensor.bytes))
                row.append("file", .string(tensor.file))
                if let scheme = tensor.scheme { row.append("scheme", .string(scheme)) }
                if let bits = tensor.bitsPerWeight { row.append("bits_per_weight", .double(bits)) }
                if let outliers = tensor.outlierColumns { row.append("outlier_columns", .int(outliers)) }
                if let blockSize = tensor.blockSize { row.append("block_size", .int(blockSize)) }
                if let doubleQuant = tensor.doubleQuant { row.append("double_quant", .bool(doubleQuant)) }
                if let fp8 = tensor.fp8 {
                    row.append("fp8", .object([
                        "values_dtype": .string(fp8.valuesDType.rawValue), "granularity": .string(fp8.granularityDescription),
                        "scale": .string(fp8.scaleName), "scale_dtype": .string(fp8.scaleDType.rawValue),
                        "scale_shape": .array(fp8.scaleShape.map { .int($0) }),
                    ]))
                }
                if let statistics = tensor.statistics { row.append("stats", statistics.json) }
                return .object(row)
            }))
        }
        return .object(object)
    }
}
