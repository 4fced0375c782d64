import Glibc

/// A file opened for positional reads (`pread`), so that reading one tensor
/// touches only that tensor's bytes and nothing is mapped into memory.
///
/// Safe to share between threads: `pread` does not move a file position.
public final class ReadableFile: @unchecked Sendable {
    public let path: String
    public let size: UInt64
    let descriptor: Int32

    /// Opens a regular file for reading.
    ///
    /// A named pipe (whose `open` would wait forever for a writer), a device
    /// (whose `open` may act on the device) or a socket is refused without
    /// being opened (`stat`); the file is then opened without blocking
    /// (`O_NONBLOCK`) and checked again with `fstat`, so that one swapped in
    /// between is refused too.
    ///
    /// - Throws: `InputFileError.notARegularFile` (exit 3) for a named pipe,
    ///   device or socket, `IOError` for a folder or when it cannot be opened.
    public init(path: String) throws {
        self.path = path
        var info = stat()
        if stat(path, &info) == 0 { try Self.checkRegular(info.st_mode, path: path) }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { throw IOError("open", path: path) }
        guard fstat(fd, &info) == 0 else {
            let error = IOError("stat", path: path)
            close(fd)
            throw error
        }
        do { try Self.checkRegular(info.st_mode, path: path) } catch {
            close(fd)
            throw error
        }
        // Reads of a regular file never block; clear the flag all the same.
        _ = fcntl(fd, F_SETFL, O_RDONLY)
        descriptor = fd
        size = UInt64(info.st_size)
        // Tensors are read front to back; tell the kernel to read ahead aggressively.
        _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_SEQUENTIAL))
    }

    /// A folder is an I/O error (EISDIR, exit 4); anything else but a regular file is invalid input (exit 3).
    private static func checkRegular(_ mode: mode_t, path: String) throws {
        switch mode & S_IFMT {
        case S_IFREG: return
        case S_IFDIR: throw IOError("read", path: path, errno: .isDirectory)
        default: throw InputFileError.notARegularFile(path: path, kind: InputFileError.kindDescription(mode: mode))
        }
    }

    deinit { close(descriptor) }

    /// Fills `buffer` with the bytes at `offset`. A file that ends early is an
    /// I/O error: the header was validated against the size seen at open time,
    /// so a short read means the file changed underneath us.
    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw IOError("read", path: path)
            }
            if n == 0 {
                throw IOError("read", path: path, reason: .other("file ended at byte \(offset + UInt64(done)), expected \(buffer.count - done) more bytes (was it truncated while qconv ran?)"))
            }
            done += n
        }
    }

    /// Reads `count` bytes at `offset` into a new array (headers and small tensors only).
    public func readBytes(at offset: UInt64, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(at: offset, into: $0) }
        return bytes
    }

    /// Streams `length` bytes starting at `offset` through `buffer` to `sink`,
    /// at most 256 KB at a time (see `SequentialWriter.bufferSize`): the one
    /// copy loop every command uses.
    public func stream(from offset: UInt64, length: UInt64, buffer: UnsafeMutableRawBufferPointer,
                       to sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        var done: UInt64 = 0
        let step = UInt64(min(buffer.count, SequentialWriter.bufferSize))
        while done < length {
            let n = Int(min(step, length - done))
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
            try read(at: offset + done, into: chunk)
            try sink(UnsafeRawBufferPointer(chunk))
            done += UInt64(n)
        }
    }
}
