import Glibc

/// Writes a file front to back through one large buffer.
///
/// Large writes go straight to the file; small ones are gathered so that the
/// kernel sees few, big `write` calls.
public final class SequentialWriter {
    public let path: String
    private var descriptor: Int32
    private let buffer: UnsafeMutableRawBufferPointer
    private var buffered = 0
    /// Bytes accepted so far (buffered or written).
    public private(set) var position: UInt64 = 0

    static let bufferSize = 4 << 20

    /// Takes ownership of an open file descriptor.
    init(descriptor: Int32, path: String) {
        self.descriptor = descriptor
        self.path = path
        buffer = .allocate(byteCount: Self.bufferSize, alignment: 64)
    }

    deinit {
        buffer.deallocate()
        if descriptor >= 0 { Glibc.close(descriptor) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0 else { return }
        if buffered + bytes.count <= buffer.count {
            UnsafeMutableRawBufferPointer(rebasing: buffer[buffered...]).copyMemory(from: bytes)
            buffered += bytes.count
        } else {
            try flush()
            if bytes.count >= buffer.count / 2 {
                try writeFully(bytes)
            } else {
                buffer.copyMemory(from: bytes)
                buffered = bytes.count
            }
        }
        position += UInt64(bytes.count)
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    public func write(_ string: String) throws {
        try write(Array(string.utf8))
    }

    public func writeZeros(_ count: Int) throws {
        var remaining = count
        let zeros = [UInt8](repeating: 0, count: min(count, 1 << 16))
        while remaining > 0 {
            let n = min(remaining, zeros.count)
            try zeros.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            remaining -= n
        }
    }

    public func flush() throws {
        guard buffered > 0 else { return }
        try writeFully(UnsafeRawBufferPointer(rebasing: buffer[0..<buffered]))
        buffered = 0
    }

    /// Flushes and closes the file; further writes are a programming error.
    public func close() throws {
        try flush()
        if descriptor >= 0 {
            let fd = descriptor
            descriptor = -1
            if Glibc.close(fd) != 0 { throw IOError("write", path: path) }
        }
    }

    private func writeFully(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(descriptor, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw IOError("write", path: path)
            }
            done += n
        }
    }
}
