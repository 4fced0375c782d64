import Glibc

/// Small questions about paths, answered with `stat`.
public enum FileSystem {
    public enum Kind { case missing, file, directory, other }

    public static func kind(of path: String) -> Kind {
        var info = stat()
        guard stat(path, &info) == 0 else { return .missing }
        switch info.st_mode & S_IFMT {
        case S_IFREG: return .file
        case S_IFDIR: return .directory
        default: return .other
        }
    }

    public static func exists(_ path: String) -> Bool { kind(of: path) != .missing }

    /// Whether the directory entry `path` exists, whatever it is: unlike
    /// `exists`, a symbolic link counts even when what it points to does not
    /// exist (`lstat`).
    public static func entryExists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    /// The (device, inode) pair that identifies a file however it is named.
    public struct Identity: Hashable {
        let device: UInt64
        let inode: UInt64
    }

    public static func identity(of path: String) -> Identity? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Identity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    public static func size(of path: String) -> UInt64? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return UInt64(info.st_size)
    }

    /// The names in a directory, sorted, without "." and "..".
    public static func contents(of directory: String) throws -> [String] {
        guard let dir = opendir(directory) else { throw IOError("list", path: directory) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// The absolute path with symbolic links resolved, or `path` itself when it does not exist.
    public static func canonicalPath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    public static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    public static func directoryName(of path: String) -> String {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "." }
        let parent = String(trimmed[..<slash])
        return parent.isEmpty ? "/" : parent
    }

    public static func baseName(of path: String) -> String {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return trimmed }
        return String(trimmed[trimmed.index(after: slash)...])
    }

    /// Copies a file (config.json, tokenizer files) byte for byte.
    public static func copyFile(from source: String, to destination: String) throws {
        let input = try ReadableFile(path: source)
        let output = try createFile(destination)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        try output.append(contentsOf: input, offset: 0, length: input.size, buffer: buffer)
        try output.close()
    }

    /// Creates the folders of a relative path's parents inside `root` (`a/b/c.json`: `a` and `a/b`).
    public static func createFolders(for relativePath: String, in root: String) throws {
        var path = root
        for component in relativePath.split(separator: "/").dropLast() {
            path = join(path, String(component))
            if kind(of: path) != .directory && mkdir(path, 0o755) != 0 { throw IOError("create", path: path) }
        }
    }

    /// Creates (or truncates) a file for writing.
    public static func createFile(_ path: String, exclusive: Bool = false) throws -> SequentialWriter {
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : O_TRUNC)
        let fd = open(path, flags, 0o644)
        guard fd >= 0 else { throw IOError("create", path: path) }
        return SequentialWriter(descriptor: fd, path: path)
    }

    /// What `renameWithoutReplacing` did.
    enum NoReplaceRename {
        /// The source now has the new name.
        case renamed
        /// Something is already called `destination` (even a dangling link); nothing changed.
        case destinationExists
        /// The file system or kernel cannot rename without replacing; nothing changed.
        case unsupported
    }

    /// `renameat2(RENAME_NOREPLACE)`: renames `source` to `destination` only
    /// if no entry of that name exists, in one step, so that two processes
    /// finishing at the same moment cannot both take the name. The C library's
    /// wrapper is looked up at run time (Swift's Glibc module does not declare it).
    static func renameWithoutReplacing(_ source: String, to destination: String) throws -> NoReplaceRename {
        guard let renameat2 = renameat2Function else { return .unsupported }
        if renameat2(AT_FDCWD, source, AT_FDCWD, destination, 1 /* RENAME_NOREPLACE */) == 0 { return .renamed }
        switch errno {
        case EEXIST: return .destinationExists
        case EINVAL, ENOSYS, ENOTSUP: return .unsupported
        default: throw IOError("rename to", path: destination)
        }
    }

    private typealias Renameat2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32

    private static let renameat2Function: Renameat2? = {
        guard let symbol = dlsym(nil, "renameat2") else { return nil }
        return unsafeBitCast(symbol, to: Renameat2.self)
    }()

    /// Removes a file or a directory tree; missing paths are not an error.
    /// A symbolic link is removed itself, never what it points to (`lstat`).
    public static func removeItem(_ path: String) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        switch info.st_mode & S_IFMT {
        case S_IFDIR:
            for name in (try? contents(of: path)) ?? [] { removeItem(join(path, name)) }
            rmdir(path)
        default:
            unlink(path)
        }
    }
}
