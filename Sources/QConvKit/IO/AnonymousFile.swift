import Glibc

extension ReadableFile {
    /// Bytes made in memory (a config a merge edited) as a file that reads
    /// like any other: written to a new file in `directory`, opened, and
    /// unlinked at once, so that no path names it and nothing is left behind
    /// (the open descriptor keeps the data until the file is released).
    public static func holding(_ bytes: [UInt8], in directory: String) throws -> ReadableFile {
        let (path, descriptor) = try createHeldFile(in: directory)
        defer {
            unlink(path)
            TemporaryOutputs.unregister(path)
        }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress! + written, bytes.count - written) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let error = IOError("write", path: path)
                close(descriptor)
                throw error
            }
            written += n
        }
        close(descriptor)
        return try ReadableFile(path: path)
    }

    /// Creates `.qconv-held-PID-N` in `directory` (the first free N), listed
    /// in `TemporaryOutputs` so that a signal removes it.
    private static func createHeldFile(in directory: String) throws -> (path: String, descriptor: Int32) {
        for attempt in 0..<100 {
            let path = FileSystem.join(directory, ".qconv-held-\(getpid())-\(attempt)")
            var descriptor: Int32 = -1
            switch TemporaryOutputs.create(path, isDirectory: false, with: {
                descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                return descriptor >= 0
            }) {
            case .created: return (path, descriptor)
            case .failed(.fileExists): continue
            case let .failed(error): throw IOError("create", path: path, errno: error)
            case .stopping: throw IOError("create", path: path, reason: .other("the process is stopping"))
            }
        }
        throw IOError("create", path: directory, reason: .other("100 temporary names in it are taken"))
    }
}
