import QConvCommandLine
import QConvKit

/// A `qconv` subcommand: its command-line shape, the typed options it reads
/// from it (once, before any work), and what it does with them.
protocol Command {
    associatedtype Options: CommandOptions
    static var spec: CommandSpec { get }
    /// Reads every argument and option the command takes.
    static func parse(_ arguments: ParsedArguments) throws -> Options
    /// Runs the command; returns the exit code (0, or 1 for a failed check).
    static func run(_ options: Options, console: Console) throws -> Int32
}

extension Command {
    /// Parses `arguments` against the spec, then runs.
    static func main(_ arguments: [String]) throws -> Int32 {
        let options = try parse(try ParsedArguments.parse(arguments, spec: spec))
        if !options.common.quiet {
            StaleTemporaries.setHandler { removal in
                Console.note("removed \(removal.path), a temporary output left by process \(removal.processID), which no longer exists")
            }
        }
        return try run(options, console: Console(quiet: options.common.quiet))
    }
}

/// A command's parsed options, which include the common ones.
protocol CommandOptions {
    var common: CommonOptions { get }
}

/// Options every command takes, read once.
struct CommonOptions {
    static let jsonFlag = Flag("--json", "Print a JSON report on stdout instead of text.")
    static let quietFlag = Flag("--quiet", "Print nothing but errors (and --json output); no progress line.")
    static let threadsOption = Option<Int>("--threads", "N", "Use at most N threads (default: every core).", in: 1...1024)

    /// The three specs, for a command's option list.
    static let json = jsonFlag.spec, quiet = quietFlag.spec, threads = threadsOption.spec

    /// A JSON report instead of text.
    let json: Bool
    /// Nothing but errors (and JSON).
    let quiet: Bool
    let threads: Int

    init(_ arguments: ParsedArguments) throws {
        json = arguments[Self.jsonFlag]
        quiet = arguments[Self.quietFlag]
        threads = try arguments.value(Self.threadsOption) ?? defaultThreadCount
    }

    /// Progress for the library: a line on stderr when it is a terminal,
    /// unless the output is quiet or JSON.
    var progress: ProgressHandler? { quiet || json ? nil : ProgressLine.handler() }
}

/// The option of commands that write an output.
enum OutputOptions {
    static let forceFlag = Flag("--force", "Replace OUT if it exists.")
    static let force = forceFlag.spec
}
