/// A tensor's side parts (every part after the bulk), read whole,
/// checksum-checked and validated: everything decoding needs besides the
/// bulk, and every rule about part contents that a header cannot express.
/// `verify` on a container loads it too, so it refuses exactly what
/// decoding refuses.
public struct SideData: Sendable {
    /// 4-bit: one scale per block (double quantization undone).
    public let absmax: [Float]
    /// int8: one scale per row.
    public let rowScales: [Float]
    /// int8: outlier column indices, strictly increasing, each below the column count.
    public let outlierColumns: [Int]
    /// int8: float16 bits, `rows × outlierColumns.count`, plus one trailing 0
    /// so that pointers into it always have a base address.
    public let outlierValues: [UInt16]
    /// FP8: the scales as float32 (one, one per row, or one per block).
    public let scales: [Float]

    /// Reads and validates the side parts of `tensor`.
    ///
    /// - Throws: the part's checksum error for a damaged part,
    ///   `ContainerError.invalidOutlierColumn` for an outlier column index
    ///   out of range or out of order, `IOError` when reading fails.
    public init(_ tensor: ModelTensor) throws {
        var absmax: [Float] = [], rowScales: [Float] = [], outlierColumns: [Int] = [], outlierValues: [UInt16] = [0], scales: [Float] = []
        switch tensor.scheme {
        case .raw, .strided:
            break
        case .scaledFP8:
            scales = try tensor.parts[1].stored(named: tensor.name).allFloats()
        case .fourBit(let p):
            switch p.blockScales {
            case .float32:
                absmax = Self.values(try tensor.parts[1].readAll(), as: Float.self)
            case .doubleQuantized(let offset):
                let codes = try tensor.parts[1].readAll()
                let nested = Self.values(try tensor.parts[2].readAll(), as: Float.self)
                absmax = [Float](repeating: 0, count: codes.count)
                codes.withUnsafeBufferPointer { codes in
                    nested.withUnsafeBufferPointer { nested in
                        absmax.withUnsafeMutableBufferPointer { absmax in
                            guard let destination = absmax.baseAddress else { return }
                            DoubleQuantization.dequantize(codes: codes, nestedAbsmax: nested, offset: offset, into: destination)
                        }
                    }
                }
            }
        case .int8:
            rowScales = Self.values(try tensor.parts[1].readAll(), as: Float.self)
            outlierColumns = Self.values(try tensor.parts[2].readAll(), as: Int32.self).map { Int(Int32(littleEndian: $0)) }
            try Self.validate(outlierColumns, of: tensor)
            outlierValues = Self.values(try tensor.parts[3].readAll(), as: UInt16.self).map { UInt16(littleEndian: $0) } + [0]
        }
        self.absmax = absmax
        self.rowScales = rowScales
        self.outlierColumns = outlierColumns
        self.outlierValues = outlierValues
        self.scales = scales
    }

    /// Outlier columns must be strictly increasing and inside the tensor.
    private static func validate(_ columns: [Int], of tensor: ModelTensor) throws {
        let count = tensor.info.matrixShape.columns
        for (i, column) in columns.enumerated() where column < 0 || column >= count || (i > 0 && column <= columns[i - 1]) {
            throw ContainerError.invalidOutlierColumn(file: tensor.filePath, tensor: tensor.name, position: i, column: column, columns: count)
        }
    }

    /// Little-endian bytes as values of `T`.
    private static func values<T>(_ bytes: [UInt8], as type: T.Type) -> [T] {
        let count = bytes.count / MemoryLayout<T>.size
        return bytes.withUnsafeBytes { raw in (0..<count).map { raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self) } }
    }
}
