/// The entry point of `qconv inspect`: what any model qconv reads holds.
public enum Inspection {
    /// Reports what `path` holds, from its headers; with `statistics`,
    /// streams every float tensor (decoding quantized ones, checking their
    /// checksums) for min, max, mean, std, absmax and NaN/Inf counts.
    public static func inspect(path: String, statistics: Bool, threads: Int, progress: ProgressHandler? = nil) throws -> InspectionReport {
        let model = try Model.open(path)
        var report = InspectionReport(model)
        if statistics {
            let counter = ProgressCounter(label: "inspect", total: model.sourceTensorBytes, handler: progress)
            defer { counter.finish() }
            try report.addStatistics(of: model, threads: threads, progress: counter)
        }
        return report
    }
}

extension InspectionReport {
    /// What `model`'s headers say. Tensors of a quantized format list their
    /// scheme, bits per weight and outlier columns; a container's own facts
    /// (format version, writer, options, sizes) go in `container`.
    public init(_ model: Model) {
        self.init(path: model.path, format: model.format.name)
        files = model.files.map { File(name: $0.name, bytes: $0.size, tensorCount: $0.tensorCount) }
        auxiliaryFiles = model.sideFiles.map(\.name)
        metadata = model.metadata ?? []
        let quantizedFormat = model.format.storesQuantizedTensors
        tensors = model.tensors.map { tensor in
            let elements = tensor.info.elementCount
            var row = Tensor(name: tensor.name, dtype: tensor.info.dtype.rawValue, shape: tensor.info.shape, parameters: elements,
                             bytes: tensor.storedBytes, file: model.files[tensor.file].name)
            if quantizedFormat || tensor.scheme.isQuantized {
                row.scheme = tensor.scheme.name
                row.bitsPerWeight = elements > 0 ? Double(tensor.storedBytes) * 8 / Double(elements) : 0
                if case .int8(let p) = tensor.scheme { row.outlierColumns = p.outlierColumnCount }
                if case .fourBit(let p) = tensor.scheme { (row.blockSize, row.doubleQuant) = (p.blockSize, p.blockScales != .float32) }
                if case .scaledFP8(let p) = tensor.scheme { row.fp8 = p }
            }
            return row
        }
        if model.format == .container { container = ContainerSummary(model, storedBytes: tensorBytes, parameters: parameterCount) }
        if case .bitsandbytes = model.format { bitsandbytes = BitsandbytesSummary(model, storedBytes: tensorBytes, parameters: parameterCount) }
    }

    /// Streams every float tensor of `model` on all threads (a tensor each)
    /// and adds its statistics to its row.
    public mutating func addStatistics(of model: Model, threads: Int, progress: ProgressCounter) throws {
        let results = SlotValues<TensorStatistics?>(slots: max(model.tensors.count, 1), initial: nil)
        try parallelFor(model.tensors.count, threads: threads) { i in
            let tensor = model.tensors[i]
            // Every tensor counts towards the progress total, decoded or not.
            defer { progress.advance(by: UInt64(tensor.info.byteCount), item: tensor.name) }
            guard tensor.info.dtype.isDecodableToFloat else { return }
            results[i] = try TensorStatistics.compute(try tensor.values())
        }
        for i in tensors.indices { tensors[i].statistics = results[i] }
    }
}

extension InspectionReport.ContainerSummary {
    init(_ model: Model, storedBytes: UInt64, parameters: Int) {
        let quantized = model.tensors.filter { $0.scheme.isQuantized }
        let quantizedElements = quantized.reduce(0) { $0 + $1.info.elementCount }
        self.init(version: ContainerFormat.version,
                  writtenBy: model.provenance?["qconv_version"]?.stringValue.map { "qconv " + $0 },
                  options: model.provenance?["options"],
                  schemes: TensorScheme.names.compactMap { name in
                      let count = model.tensors.filter { $0.scheme.name == name }.count
                      return count > 0 ? (name, count) : nil
                  },
                  // What the converter recorded of its source (kept tensors may be stored in a smaller dtype).
                  sourceTensorBytes: model.provenance?["source"]?.objectValue?["tensor_bytes"]?.numberValue?.uint64Value ?? model.sourceTensorBytes,
                  bitsPerWeight: parameters > 0 ? Double(storedBytes) * 8 / Double(parameters) : 0,
                  quantizedBitsPerWeight: quantizedElements > 0
                      ? Double(quantized.reduce(UInt64(0)) { $0 + $1.storedBytes }) * 8 / Double(quantizedElements) : 0)
    }
}

extension InspectionReport.BitsandbytesSummary {
    init(_ model: Model, storedBytes: UInt64, parameters: Int) {
        let quantized = model.tensors.filter { $0.scheme.isQuantized }
        let elements = quantized.reduce(0) { $0 + $1.info.elementCount }
        self.init(schemes: model.quantizedSchemeCounts, sourceTensorBytes: model.sourceTensorBytes,
                  bitsPerWeight: parameters > 0 ? Double(storedBytes) * 8 / Double(parameters) : 0,
                  quantizedBitsPerWeight: elements > 0 ? Double(quantized.reduce(UInt64(0)) { $0 + $1.storedBytes }) * 8 / Double(elements) : 0,
                  quantizationConfig: TransformersConfig.object(of: model)?["quantization_config"])
    }
}
