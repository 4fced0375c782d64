/// Writes one safetensors file by streaming: the header is fixed up front from
/// names, dtypes and shapes, then each tensor's bytes are appended in order.
///
/// The layout is the reference writer's: `__metadata__` first, then tensors in
/// data order, compact JSON padded with spaces to a multiple of 8, contiguous
/// offsets. Given tensors in a file's own order, the output is byte-identical
/// to a file written by the reference writer.
public final class SafeTensorsWriter {
    public let tensors: [TensorInfo]
    private let output: SequentialWriter
    private let dataStart: UInt64
    private let expectedDataLength: UInt64
    private var written: UInt64 = 0

    /// Writes the header to `output` at once.
    public init(output: SequentialWriter, tensors: [TensorInfo], metadata: [(key: String, value: String)]?) throws {
        self.output = output
        self.tensors = tensors
        let header = Self.headerBytes(tensors: tensors, metadata: metadata)
        expectedDataLength = tensors.reduce(0) { $0 + UInt64($1.byteCount) }
        output.preallocate(8 + UInt64(header.count) + expectedDataLength)
        var length = UInt64(header.count).littleEndian
        try withUnsafeBytes(of: &length) { try output.write($0) }
        try output.write(header)
        dataStart = output.position
    }

    /// The header JSON, padded; exposed for size planning and tests.
    public static func headerBytes(tensors: [TensorInfo], metadata: [(key: String, value: String)]?) -> [UInt8] {
        var object = JSONObject()
        if let metadata {
            object.append("__metadata__", .object(JSONObject(metadata.map { ($0.key, JSONValue.string($0.value)) })))
        }
        var offset: UInt64 = 0
        for tensor in tensors {
            let end = offset + UInt64(tensor.byteCount)
            object.append(tensor.name, .object([
                "dtype": .string(tensor.dtype.rawValue),
                "shape": .array(tensor.shape.map { .int($0) }),
                "data_offsets": .array([.uint(offset), .uint(end)]),
            ]))
            offset = end
        }
        var bytes = Array(JSONWriter.serialize(.object(object)).utf8)
        let padding = (8 - bytes.count % 8) % 8
        bytes += [UInt8](repeating: 0x20, count: padding)
        return bytes
    }

    /// `tensors` in the order safetensors' `save_file` writes them: by dtype
    /// in the reverse of the order its `Dtype` declares them (U64, I64, F64,
    /// C64, F32, ..., BOOL), then by name, byte for byte.
    public static func referenceOrder(_ tensors: [TensorInfo]) -> [TensorInfo] {
        tensors.sorted { a, b in
            let (x, y) = (rank(a.dtype), rank(b.dtype))
            return x != y ? x > y : Array(a.name.utf8).lexicographicallyPrecedes(Array(b.name.utf8))
        }
    }

    /// The position of a dtype in safetensors' `Dtype` declaration.
    private static func rank(_ dtype: DType) -> Int {
        switch dtype {
        case .bool: return 0
        case .f4: return 1
        case .f6e2m3: return 2
        case .f6e3m2: return 3
        case .u8: return 4
        case .i8: return 5
        case .f8e5m2: return 6
        case .f8e4m3: return 7
        case .f8e8m0: return 8
        case .f8e4m3fnuz: return 9
        case .f8e5m2fnuz: return 10
        case .i16: return 11
        case .u16: return 12
        case .f16: return 13
        case .bf16: return 14
        case .i32: return 15
        case .u32: return 16
        case .f32: return 17
        case .c64: return 18
        case .f64: return 19
        case .i64: return 20
        case .u64: return 21
        }
    }

    /// Appends tensor data; tensors follow each other with no separator.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        take(UInt64(bytes.count))
        try output.write(bytes)
    }

    /// Sets aside the next `length` bytes of tensor data for positioned writes.
    public func reserve(_ length: UInt64) throws -> OutputRegion {
        take(length)
        return try output.reserve(length)
    }

    /// Appends a stored tensor's bytes, copied by the kernel.
    public func copy(_ tensor: StoredTensor, buffer: UnsafeMutableRawBufferPointer) throws {
        let length = UInt64(tensor.info.byteCount)
        take(length)
        try output.append(contentsOf: tensor.file, offset: tensor.offset, length: length, buffer: buffer)
    }

    /// Counts `length` more bytes of tensor data, within what the header announced.
    private func take(_ length: UInt64) {
        precondition(written + length <= expectedDataLength, "more tensor data than the header announced")
        written += length
    }

    /// Checks that every announced byte was written and flushes.
    public func finish() throws {
        precondition(written == expectedDataLength, "wrote \(written) of \(expectedDataLength) bytes of tensor data")
        try output.close()
    }
}
