/// The entry point of `qconv inspect`: picks the reader by looking at the file.
public enum Inspection {
    /// Reports what `path` (a container, a safetensors file or a model folder) holds.
    ///
    /// - Parameter quiet: no progress line while `statistics` streams the tensors.
    public static func inspect(path: String, statistics: Bool, threads: Int, quiet: Bool = true) throws -> InspectionReport {
        if ContainerFile.isContainer(path: path) {
            let container = try ContainerFile(path: path)
            let progress = statistics ? Progress(label: "inspect", total: container.tensors.reduce(0) { $0 + UInt64($1.info.byteCount) }, quiet: quiet) : nil
            defer { progress?.finish() }
            return try InspectionReport.inspect(container, statistics: statistics, threads: threads, progress: progress)
        }
        let checkpoint = try Checkpoint(path: path)
        let progress = statistics ? Progress(label: "inspect", total: checkpoint.tensors.reduce(0) { $0 + UInt64($1.info.byteCount) }, quiet: quiet) : nil
        defer { progress?.finish() }
        return try InspectionReport.inspect(checkpoint, statistics: statistics, threads: threads, progress: progress)
    }
}

extension InspectionReport {
    /// Reads a container's header; with `statistics`, decodes every tensor
    /// (checking checksums) and reports statistics of the dequantized values.
    public static func inspect(_ container: ContainerFile, statistics: Bool = false, threads: Int = 1,
                               progress: Progress? = nil) throws -> InspectionReport {
        var report = InspectionReport(path: container.path, format: "qconv-container")
        let name = FileSystem.baseName(of: container.path)
        report.files = [File(name: name, bytes: container.file.size, tensorCount: container.tensors.count)]
        report.auxiliaryFiles = container.header.files.map(\.name)
        report.metadata = container.header.metadata ?? []
        report.tensors = container.tensors.map { tensor in
            var outliers: Int?
            if case .int8(let k, _, _) = tensor.parameters { outliers = k }
            let elements = tensor.info.elementCount
            return Tensor(name: tensor.name, dtype: tensor.info.dtype.rawValue, shape: tensor.info.shape, parameters: elements,
                          bytes: tensor.storedBytes, file: name, scheme: tensor.scheme.rawValue,
                          bitsPerWeight: elements > 0 ? Double(tensor.storedBytes) * 8 / Double(elements) : 0,
                          outlierColumns: outliers)
        }
        let sourceBytes = container.tensors.reduce(UInt64(0)) { $0 + UInt64($1.info.byteCount) }
        let stored = report.tensorBytes
        let quantized = container.tensors.filter { $0.scheme != .raw }
        let quantizedElements = quantized.reduce(0) { $0 + $1.info.elementCount }
        report.container = ContainerSummary(
            version: ContainerFormat.version,
            writtenBy: container.header.provenance["qconv_version"]?.stringValue.map { "qconv " + $0 },
            options: container.header.provenance["options"],
            schemes: ContainerScheme.allCases.compactMap { scheme in
                let count = container.tensors.filter { $0.scheme == scheme }.count
                return count > 0 ? (scheme.rawValue, count) : nil
            },
            sourceTensorBytes: sourceBytes,
            bitsPerWeight: report.parameterCount > 0 ? Double(stored) * 8 / Double(report.parameterCount) : 0,
            quantizedBitsPerWeight: quantizedElements > 0
                ? Double(quantized.reduce(UInt64(0)) { $0 + $1.storedBytes }) * 8 / Double(quantizedElements) : 0)
        if statistics {
            var results = [TensorStatistics?](repeating: nil, count: container.tensors.count)
            try results.withUnsafeMutableBufferPointer { slots in
                try parallelFor(container.tensors.count, threads: threads) { i in
                    let tensor = container.tensors[i]
                    // Every tensor counts towards the progress total, decoded or not.
                    defer { progress?.advance(by: UInt64(tensor.info.byteCount), item: tensor.name) }
                    guard tensor.info.dtype.isDecodableToFloat else { return }
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
                    defer { buffer.deallocate() }
                    let decoder = try ContainerTensorDecoder(container: container, tensor: tensor, buffer: buffer)
                    slots[i] = try TensorStatistics.compute(decoder)
                }
            }
            for i in report.tensors.indices { report.tensors[i].statistics = results[i] }
        }
        return report
    }
}
