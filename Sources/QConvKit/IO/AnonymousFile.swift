import Glibc

extension ReadableFile {
    /// Bytes made in memory (a config a merge edited) as a file that reads
    /// like any other: written to a new file in `directory`, opened, and
    /// unlinked at once, so that no path names it and nothing is left behind
    /// (the open descriptor keeps the data until the file is released).
    public static func holding(_ bytes: [UInt8], in directory: String) throws -> ReadableFile {
        var template = Array(FileSystem.join(directory, ".qconv-XXXXXX").utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        let path = String(cString: template)
        guard descriptor >= 0 else { throw IOError("create", path: path) }
        TemporaryOutputs.register(path, isDirectory: false)
        defer {
            unlink(path)
            TemporaryOutputs.unregister(prefix: path)
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
}
