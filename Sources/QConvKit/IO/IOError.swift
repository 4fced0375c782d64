import Glibc

/// An `errno` value as a type (after swift-system's `Errno`), so that code
/// says `.noSuchFileOrDirectory` instead of `2`.
public struct Errno: RawRepresentable, Equatable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's current `errno`.
    public static var current: Errno { Errno(rawValue: errno) }

    public static let noSuchFileOrDirectory = Errno(rawValue: ENOENT)
    public static let fileExists = Errno(rawValue: EEXIST)
    public static let isDirectory = Errno(rawValue: EISDIR)
    public static let interrupted = Errno(rawValue: EINTR)
    public static let noSpace = Errno(rawValue: ENOSPC)

    /// The C library's text for the value ("No such file or directory").
    public var description: String { String(cString: strerror(rawValue)) }
}

/// An operating-system failure on a named path (exit code 4).
public struct IOError: QConvError, Equatable {
    /// Why the operation failed.
    public enum Reason: Equatable, Sendable {
        /// The system call failed with this `errno`.
        case system(Errno)
        /// Something else went wrong (a file that ended early, no free name).
        case other(String)
    }

    /// What qconv was doing, e.g. "open", "read", "write", "rename".
    public let operation: String
    public let path: String
    public let reason: Reason

    /// An error for the system call that just failed (its `errno`).
    public init(_ operation: String, path: String) {
        self.init(operation, path: path, reason: .system(.current))
    }

    public init(_ operation: String, path: String, errno: Errno) {
        self.init(operation, path: path, reason: .system(errno))
    }

    public init(_ operation: String, path: String, reason: Reason) {
        self.operation = operation
        self.path = path
        self.reason = reason
    }

    /// The `errno` of a failed system call; nil for other failures.
    public var errno: Errno? {
        if case .system(let value) = reason { return value }
        return nil
    }

    public var category: ErrorCategory { .io }

    public var description: String {
        switch reason {
        case .system(let errno): return "\(path): cannot \(operation): \(errno)"
        case .other(let detail): return "\(path): cannot \(operation): \(detail)"
        }
    }
}
