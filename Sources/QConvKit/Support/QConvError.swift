/// How a failure should be reported to the user, and with which exit code.
///
/// Every error type in QConvKit declares its category so that the command-line
/// front end can map it to an exit code without knowing the concrete type.
public enum ErrorCategory: Sendable {
    /// A check the user asked for did not pass (e.g. a `verify` threshold). Exit 1.
    case checkFailed
    /// The request was wrong (an output that exists, a pattern that is not one; for the
    /// command line: an unknown option, a missing argument). Exit 2.
    case usage
    /// An input file is invalid, corrupt or hostile. Exit 3.
    case invalidInput
    /// The operating system refused an operation (disk full, permission, missing file). Exit 4.
    case io

    /// The process exit code documented in docs/CLI.md.
    public var exitCode: Int32 {
        switch self {
        case .checkFailed: return 1
        case .usage: return 2
        case .invalidInput: return 3
        case .io: return 4
        }
    }
}

/// An error QConvKit reports to users: a one-line description naming the file,
/// the tensor and the rule broken, and a category that selects the exit code.
public protocol QConvError: Error, CustomStringConvertible {
    var category: ErrorCategory { get }
}
