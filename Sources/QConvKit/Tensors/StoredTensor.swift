/// Where a tensor's bytes live: a file and an absolute offset in it.
///
/// Every reader in qconv (safetensors files, model folders, the raw parts of a
/// container) hands out `StoredTensor`s, and every consumer reads through
/// them, so decoding to float lives in exactly one place.
public struct StoredTensor: Sendable {
    public let info: TensorInfo
    public let file: ReadableFile
    /// Absolute position of the first byte in `file`.
    public let offset: UInt64

    public init(info: TensorInfo, file: ReadableFile, offset: UInt64) {
        self.info = info
        self.file = file
        self.offset = offset
    }

    public var name: String { info.name }

    /// Reads `buffer.count` bytes starting `byteOffset` bytes into the tensor.
    public func readBytes(at byteOffset: Int = 0, into buffer: UnsafeMutableRawBufferPointer) throws {
        precondition(byteOffset >= 0 && byteOffset + buffer.count <= info.byteCount, "read outside tensor \(info.name)")
        try file.read(at: offset + UInt64(byteOffset), into: buffer)
    }

    /// The whole tensor's bytes; for small tensors only (adapters, biases, tests).
    public func allBytes() throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: info.byteCount)
        try bytes.withUnsafeMutableBytes { try readBytes(into: $0) }
        return bytes
    }

    /// Reads elements `range` decoded to float32 into `destination`.
    ///
    /// `scratch` holds the raw bytes on their way (at least
    /// `range.count * bytesPerElement`); it may be empty for F32 tensors.
    public func readFloats(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>, scratch: UnsafeMutableRawBufferPointer) throws {
        let width = info.dtype.byteWidth ?? 0
        precondition(info.dtype.isDecodableToFloat, "\(info.name) (\(info.dtype.rawValue)) is not a float tensor")
        if info.dtype == .f32 {
            try readBytes(at: range.lowerBound * 4, into: UnsafeMutableRawBufferPointer(start: destination, count: range.count * 4))
            return
        }
        let byteCount = range.count * width
        precondition(scratch.count >= byteCount, "scratch buffer too small")
        let raw = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<byteCount])
        try readBytes(at: range.lowerBound * width, into: raw)
        FloatConversion.decode(UnsafeRawPointer(raw.baseAddress!), dtype: info.dtype, count: range.count, into: destination)
    }

    /// The whole tensor as float32 (small tensors only).
    public func allFloats() throws -> [Float] {
        let count = info.elementCount
        var values = [Float](repeating: 0, count: count)
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: count * 8, alignment: 64)
        defer { scratch.deallocate() }
        try values.withUnsafeMutableBufferPointer { try readFloats(0..<count, into: $0.baseAddress!, scratch: scratch) }
        return values
    }
}
