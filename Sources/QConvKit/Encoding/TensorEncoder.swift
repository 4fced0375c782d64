/// Turns a tensor's float32 values into the parts of one scheme: the
/// per-scheme half of every conversion (`FourBitEncoder`, `Int8Encoder`,
/// `FloatEncoder`). An encoder owns its parts: it declares them, computes
/// them chunk by chunk on all cores, and writes them into whatever `PartSink`
/// the output format gives it.
public protocol TensorEncoder {
    /// The scheme `tensor` will be stored with, before its values are seen:
    /// its parts are final, parameters known only at the end (a
    /// double-quantization offset, int8 outlier columns) are placeholders.
    /// Writers plan their layout from it.
    func plannedScheme(for tensor: TensorInfo) -> TensorScheme

    /// The scheme `encode` will return for `values`, when it can be known
    /// before encoding (with at most a pass over the values); nil when it
    /// cannot (int8 outlier columns are known only once every row is seen).
    /// Layouts that record parameters ahead of the data need it. `values` is
    /// called only when the scheme depends on them (making a source can cost:
    /// a merge prepares its factors).
    func finalScheme(for values: () throws -> FloatTensorSource, as tensor: TensorInfo, context: EncodingContext) throws -> TensorScheme?

    /// The chunk buffers the encoder works in (allocated once per command).
    var bufferSize: ChunkBuffers.Size { get }

    /// Encodes `values` (float32 values of `tensor`'s elements, read from
    /// `file`, which messages name) into `sink` and returns the scheme with
    /// its final parameters.
    ///
    /// - Throws: `ConversionError` for values the scheme cannot take (NaN or
    ///   infinity, unless `context.allowNonfinite`), the sink's errors.
    func encode(_ values: FloatTensorSource, as tensor: TensorInfo, from file: String, into sink: PartSink, context: EncodingContext) throws -> TensorScheme
}

/// What encoders share within one command: threads, buffers, and the rules
/// for values they cannot represent.
public final class EncodingContext {
    public let threads: Int
    /// Encode NaN and infinity instead of refusing them.
    public let allowNonfinite: Bool
    private var buffers: [ChunkBuffers] = []

    public init(threads: Int, allowNonfinite: Bool) {
        self.threads = threads
        self.allowNonfinite = allowNonfinite
    }

    /// A context with the same threads and buffers and another rule for non-finite values.
    public func allowing(nonfinite: Bool) -> EncodingContext {
        guard nonfinite != allowNonfinite else { return self }
        let context = EncodingContext(threads: threads, allowNonfinite: nonfinite)
        context.buffers = buffers
        return context
    }

    /// Buffers of `size` for this command's threads, made on first use and then kept.
    public func buffers(_ size: ChunkBuffers.Size) -> ChunkBuffers {
        if let existing = buffers.first(where: { $0.size == size }) { return existing }
        let made = ChunkBuffers(threads: threads, size: size)
        buffers.append(made)
        return made
    }

    /// Buffers for copying stored bytes (`streamBytes`): pieces of 256 KB.
    public var copyBuffers: ChunkBuffers {
        buffers.first { $0.size.bytes >= SequentialWriter.bufferSize }
            ?? buffers(ChunkBuffers.Size(floats: 0, bytes: SequentialWriter.bufferSize, scratch: 0))
    }
}

/// Where an encoder writes a tensor's parts: regions of a container, or
/// tensors of a safetensors file. Parts come in the order of
/// `TensorScheme.parts(for:)`.
public protocol PartSink: AnyObject {
    /// Starts the bulk part and sets aside its bytes for positioned writes
    /// from any thread.
    func reserve(_ part: PartLayout) throws -> OutputRegion
    /// Whether `hashInOrder` needs the reserved part's bytes (a container's
    /// checksum); encoders skip handing them over otherwise.
    var needsBytesInOrder: Bool { get }
    /// The reserved part's bytes, in order, on the calling thread.
    func hashInOrder(_ bytes: UnsafeRawBufferPointer)
    /// The reserved part is about to be written again from its start
    /// (int8's second pass, once the outlier columns are known).
    func restartReserved()
    /// Ends the reserved part.
    func endReserved() throws
    /// Writes a whole (small) part.
    func write(_ part: PartLayout, bytes: UnsafeRawBufferPointer) throws
    /// Copies a stored part as it is, checking its checksum on the way when it has one.
    func copy(_ part: StoredPart, context: EncodingContext) throws
}

extension PartSink {
    /// Writes an array as a whole part.
    func write<T>(_ part: PartLayout, array: [T]) throws {
        try array.withUnsafeBytes { try write(part, bytes: UnsafeRawBufferPointer(rebasing: $0[0..<Int(part.byteCount)])) }
    }
}
