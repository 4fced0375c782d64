/// The command line was wrong: an unknown option, a missing argument, a value
/// that does not parse. Exit code 2.
public struct UsageError: Error, CustomStringConvertible, Equatable {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }

    /// The exit code of every usage error.
    public static let exitCode: Int32 = 2
}
