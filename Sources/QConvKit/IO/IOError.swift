import Glibc

/// An operating-system failure on a named path (exit code 4).
public struct IOError: QConvError {
    /// What qconv was doing, e.g. "open", "read", "write", "rename".
    public let operation: String
    public let path: String
    /// The `errno` value, or 0 when the failure is not an OS error.
    public let code: Int32
    /// Extra detail when `code` is 0.
    public let detail: String?

    public init(_ operation: String, path: String, code: Int32 = errno, detail: String? = nil) {
        self.operation = operation
        self.path = path
        self.code = code
        self.detail = detail
    }

    public var category: ErrorCategory { .io }

    public var description: String {
        let reason = detail ?? String(cString: strerror(code))
        return "\(path): cannot \(operation): \(reason)"
    }
}
