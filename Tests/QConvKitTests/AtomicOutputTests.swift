import Glibc
import XCTest
import QConvKit
import QConvTestSupport

/// Outputs appear whole or not at all, and never replace what they must not.
final class AtomicOutputTests: XCTestCase {
    private let tensors = [TensorInfo(name: "w", dtype: .f32, shape: [256]), TensorInfo(name: "b", dtype: .f16, shape: [8])]
    private var payload: [UInt8] { (0..<(256 * 4 + 16)).map { UInt8(truncatingIfNeeded: $0 * 7) } }

    private func read(_ path: String) -> [UInt8]? {
        FileManager.default.contents(atPath: path).map { [UInt8]($0) }
    }

    /// Names in `folder` that a writer left behind (temporary outputs are hidden files).
    private func leftovers(_ folder: TemporaryDirectory) -> [String] {
        folder.contents().filter { $0.contains(".qconv-tmp") }
    }

    private func makeWriter(_ destination: String, folder: Bool = false, overwrite: Bool = false, inputs: [String] = []) throws -> CheckpointWriter {
        let layout: CheckpointWriter.Layout = folder
            ? .folder(shards: [("model-00001-of-00002.safetensors", [tensors[0]]), ("model-00002-of-00002.safetensors", [tensors[1]])])
            : .file
        return try CheckpointWriter(destination: destination, layout: layout, tensors: tensors, metadata: [("format", "pt")], overwrite: overwrite, inputs: inputs)
    }

    private func writeComplete(_ destination: String, folder: Bool = false, overwrite: Bool = false, inputs: [String] = []) throws {
        let writer = try makeWriter(destination, folder: folder, overwrite: overwrite, inputs: inputs)
        try payload.withUnsafeBytes { try writer.write($0) }
        try writer.commit()
    }

    private func assertUsageError(_ body: @autoclosure () throws -> Any, containing text: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            XCTAssertTrue(error is OutputError, "\(error)", file: file, line: line)
            XCTAssertEqual((error as? QConvError)?.category.exitCode, 2, file: file, line: line)
            XCTAssertTrue("\(error)".contains(text), "\(error)", file: file, line: line)
        }
    }

    // MARK: - Failed writes leave nothing

    struct InjectedFailure: Error {}

    /// Writes half of the data, then fails; the writer dies with the scope.
    private func failHalfway(_ destination: String, folder: Bool) throws {
        let writer = try makeWriter(destination, folder: folder)
        try payload.withUnsafeBytes { try writer.write(UnsafeRawBufferPointer(rebasing: $0[0..<($0.count / 2 + 3)])) }
        throw InjectedFailure()
    }

    func testInjectedFailureMidWriteLeavesNothing() throws {
        let folder = TemporaryDirectory()
        for (name, isFolder) in [("out.safetensors", false), ("model", true)] {
            let destination = folder.file(name)
            XCTAssertThrowsError(try failHalfway(destination, folder: isFolder)) { XCTAssertTrue($0 is InjectedFailure) }
            XCTAssertFalse(FileManager.default.fileExists(atPath: destination), name)
            XCTAssertEqual(folder.contents(), [], name)
        }
    }

    func testTemporaryOutputIsHiddenUntilCommit() throws {
        let folder = TemporaryDirectory()
        for (name, isFolder) in [("out.safetensors", false), ("model", true)] {
            let destination = folder.file(name)
            let writer = try makeWriter(destination, folder: isFolder)
            try payload.withUnsafeBytes { try writer.write($0) }
            XCTAssertFalse(FileManager.default.fileExists(atPath: destination))
            XCTAssertEqual(leftovers(folder).count, 1, "\(folder.contents())")
            XCTAssertTrue(leftovers(folder)[0].hasPrefix("." + name + ".qconv-tmp"), "\(folder.contents())")
            writer.discard()
            XCTAssertEqual(folder.contents(), [], name)
        }
    }

    func testWriterDroppedWithoutCommitLeavesNothing() throws {
        let folder = TemporaryDirectory()
        do {
            let writer = try makeWriter(folder.file("model"), folder: true)
            try payload.withUnsafeBytes { try writer.write($0) }
            // All data written, index pending: still nothing visible, and nothing once dropped.
            XCTAssertEqual(leftovers(folder).count, 1)
        }
        XCTAssertEqual(folder.contents(), [])
    }

    func testAtomicOutputDiscardAndDeinit() throws {
        let folder = TemporaryDirectory()
        do {
            let output = try AtomicOutput(destination: folder.file("a.bin"), kind: .file, overwrite: false, inputs: [])
            let writer = try output.makeWriter()
            try writer.write([1, 2, 3])
            try writer.close()
            XCTAssertTrue(FileManager.default.fileExists(atPath: output.temporaryPath))
            output.discard()
            XCTAssertFalse(FileManager.default.fileExists(atPath: output.temporaryPath))
        }
        do {
            let output = try AtomicOutput(destination: folder.file("dir"), kind: .directory, overwrite: false, inputs: [])
            let writer = try output.createFile(named: "x.json")
            try writer.write([1])
            try writer.close()
            XCTAssertEqual(leftovers(folder).count, 1)
        }
        XCTAssertEqual(folder.contents(), [])
        let output = try AtomicOutput(destination: folder.file("a.bin"), kind: .file, overwrite: false, inputs: [])
        let writer = try output.makeWriter()
        try writer.write([9, 8])
        try writer.close()
        try output.commit()
        XCTAssertEqual(read(folder.file("a.bin")), [9, 8])
        XCTAssertEqual(folder.contents(), ["a.bin"])
    }

    /// `--force` over a link to a folder, or over a folder holding such a
    /// link, replaces the link: what it points to is not touched.
    func testReplacingAFolderNeverDeletesWhatALinkPointsTo() throws {
        let folder = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: folder.file("victim"), withIntermediateDirectories: false)
        writeFile(folder.file("victim/keep.txt"), [7])
        try FileManager.default.createSymbolicLink(atPath: folder.file("linked"), withDestinationPath: folder.file("victim"))
        try FileManager.default.createDirectory(atPath: folder.file("holder"), withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: folder.file("holder/inner"), withDestinationPath: folder.file("victim"))
        for name in ["linked", "holder"] {
            let output = try AtomicOutput(destination: folder.file(name), kind: .directory, overwrite: true, inputs: [])
            let writer = try output.createFile(named: "new.json")
            try writer.write([1])
            try writer.close()
            try output.commit()
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.file(name)), ["new.json"], name)
            XCTAssertEqual(read(folder.file("victim/keep.txt")), [7], name)
        }
        XCTAssertEqual(folder.contents().sorted(), ["holder", "linked", "victim"])
    }

    /// A destination that cannot be created: a folder without write permission
    /// (when not running as root, which ignores permissions), and always a
    /// destination whose parent is a regular file or missing.
    func testUncreatableDestinationFailsWithIOErrorAndLeavesNothing() throws {
        let folder = TemporaryDirectory()
        writeFile(folder.file("regular"), [1])
        for destination in [folder.file("regular/out.safetensors"), folder.file("missing/out.safetensors"), folder.file("regular/model")] {
            XCTAssertThrowsError(try makeWriter(destination, folder: destination.hasSuffix("model"))) { error in
                XCTAssertEqual((error as? QConvError)?.category, .io, "\(error)")
                XCTAssertTrue("\(error)".contains(destination), "\(error)")
            }
        }
        XCTAssertEqual(folder.contents(), ["regular"])

        if geteuid() != 0 {
            let locked = folder.file("locked")
            try FileManager.default.createDirectory(atPath: locked, withIntermediateDirectories: false)
            chmod(locked, 0o555)
            defer { chmod(locked, 0o755) }
            for isFolder in [false, true] {
                XCTAssertThrowsError(try makeWriter(locked + "/out", folder: isFolder)) { error in
                    XCTAssertEqual((error as? QConvError)?.category, .io, "\(error)")
                }
            }
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: locked), [])
        }
        // A folder where even root may not create files: sysfs.
        if FileManager.default.fileExists(atPath: "/sys/kernel") {
            for isFolder in [false, true] {
                XCTAssertThrowsError(try makeWriter("/sys/qconv-test-out", folder: isFolder)) { error in
                    XCTAssertEqual((error as? QConvError)?.category, .io, "\(error)")
                    // EACCES for a file, EPERM for a folder; EROFS where /sys is mounted read-only.
                    XCTAssertTrue("\(error)".contains("/sys/qconv-test-out: cannot create: ")
                                  && ["Permission denied", "Operation not permitted", "Read-only file system"].contains { "\(error)".contains($0) }, "\(error)")
                }
            }
            XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: "/sys").contains { $0.contains("qconv") })
        }
    }

    /// A real I/O failure while the data is flushed: the file size limit makes
    /// `write` fail with EFBIG partway through.
    func testWriteFailureDuringCommitLeavesNothing() throws {
        let folder = TemporaryDirectory()
        var old = rlimit()
        getrlimit(Int32(RLIMIT_FSIZE.rawValue), &old)
        let oldHandler = signal(SIGXFSZ, SIG_IGN)
        var limited = old
        limited.rlim_cur = 512
        XCTAssertEqual(setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limited), 0)
        var caught: Error?
        do {
            let writer = try makeWriter(folder.file("out.safetensors"))
            try payload.withUnsafeBytes { try writer.write($0) }
            try writer.commit()
        } catch {
            caught = error
        }
        setrlimit(Int32(RLIMIT_FSIZE.rawValue), &old)
        signal(SIGXFSZ, oldHandler)
        XCTAssertEqual((caught as? QConvError)?.category, .io, "\(String(describing: caught))")
        XCTAssertEqual(folder.contents(), [])
    }

    /// The error of a failed write names the destination the user gave, not the temporary file.
    func testWriteFailureNamesTheDestination() throws {
        let folder = TemporaryDirectory()
        let destination = folder.file("out.qc")
        var old = rlimit()
        getrlimit(Int32(RLIMIT_FSIZE.rawValue), &old)
        let oldHandler = signal(SIGXFSZ, SIG_IGN)
        var limited = old
        limited.rlim_cur = 512
        XCTAssertEqual(setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limited), 0)
        var caught: Error?
        do {
            let output = try AtomicOutput(destination: destination, kind: .file, overwrite: false, inputs: [])
            let writer = try output.makeWriter()
            try writer.write([UInt8](repeating: 1, count: 4096))
            try writer.close()
            try output.commit()
        } catch {
            caught = error
        }
        setrlimit(Int32(RLIMIT_FSIZE.rawValue), &old)
        signal(SIGXFSZ, oldHandler)
        let error = try XCTUnwrap(caught as? IOError, "\(String(describing: caught))")
        XCTAssertEqual(error.category, .io)
        XCTAssertEqual(error.errno, Errno(rawValue: EFBIG))
        XCTAssertTrue(error.description.hasPrefix(destination + ": cannot write"), error.description)
        XCTAssertFalse(error.description.contains("qconv-tmp"), error.description)
        XCTAssertEqual(folder.contents(), [])
    }

    // MARK: - Overwrite rules

    func testRefusesToOverwriteWithoutPermission() throws {
        let folder = TemporaryDirectory()
        let file = folder.file("out.safetensors")
        writeFile(file, [1, 2, 3])
        assertUsageError(try self.makeWriter(file), containing: "already exists")
        XCTAssertEqual(read(file), [1, 2, 3])

        let model = folder.file("model")
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: false)
        writeFile(model + "/keep.txt", [4])
        assertUsageError(try self.makeWriter(model, folder: true), containing: "already exists")
        XCTAssertEqual(read(model + "/keep.txt"), [4])
        XCTAssertEqual(leftovers(folder), [])
    }

    func testOverwriteReplacesFilesAndFolders() throws {
        let folder = TemporaryDirectory()
        let file = folder.file("out.safetensors")
        writeFile(file, [1, 2, 3])
        try writeComplete(file, overwrite: true)
        XCTAssertEqual(try Checkpoint(path: file).tensors.map(\.name), ["w", "b"])

        let model = folder.file("model")
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: false)
        writeFile(model + "/stale.txt", [4])
        try writeComplete(model, folder: true, overwrite: true)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: model).sorted(),
                       ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"])
        XCTAssertEqual(folder.contents(), ["model", "out.safetensors"])
    }

    func testOutputKindMustMatchAnExistingDestination() throws {
        let folder = TemporaryDirectory()
        let directory = folder.file("dir")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        let file = folder.file("file")
        writeFile(file, [1])
        assertUsageError(try self.makeWriter(directory, overwrite: true), containing: "is a folder")
        assertUsageError(try self.makeWriter(file, folder: true, overwrite: true), containing: "is a file")
        XCTAssertEqual(read(file), [1])
        XCTAssertEqual(folder.contents(), ["dir", "file"])
    }

    func testDestinationAppearingBeforeCommitIsNotReplacedWithoutPermission() throws {
        let folder = TemporaryDirectory()
        let file = folder.file("out.safetensors")
        let writer = try makeWriter(file)
        try payload.withUnsafeBytes { try writer.write($0) }
        writeFile(file, [7])
        assertUsageError(try writer.commit(), containing: "already exists")
        XCTAssertEqual(read(file), [7])
        writer.discard()
        XCTAssertEqual(folder.contents(), ["out.safetensors"])
    }

    func testRefusesToWriteOverAnInputEvenWithOverwrite() throws {
        let folder = TemporaryDirectory()
        let modelFolder = folder.file("model")
        try FileManager.default.createDirectory(atPath: modelFolder, withIntermediateDirectories: false)
        let input = modelFolder + "/model.safetensors"
        writeFile(input, CraftedInputs.validF32("w", [1, 2]))
        let original = read(input)
        let inputs = try Checkpoint(path: input).filePaths
        XCTAssertEqual(link(input, folder.file("hardlink.safetensors")), 0)
        XCTAssertEqual(symlink(input, folder.file("symlink.safetensors")), 0)
        XCTAssertEqual(symlink(modelFolder, folder.file("linked-model")), 0)

        for destination in [input, folder.file("hardlink.safetensors"), folder.file("symlink.safetensors"),
                            folder.file("linked-model/model.safetensors"), modelFolder + "/./model.safetensors"] {
            assertUsageError(try self.makeWriter(destination, overwrite: true, inputs: inputs), containing: "refusing to write over an input")
        }
        // A folder that contains an input, directly or further up, by any name.
        for destination in [modelFolder, folder.file("linked-model"), folder.path] {
            assertUsageError(try self.makeWriter(destination, folder: true, overwrite: true, inputs: inputs), containing: "refusing to write over an input")
        }
        // Inputs given through a symlink are recognised as well.
        assertUsageError(try self.makeWriter(input, overwrite: true, inputs: [folder.file("symlink.safetensors")]), containing: "refusing to write over an input")
        XCTAssertEqual(read(input), original)
        XCTAssertEqual(folder.contents(), ["hardlink.safetensors", "linked-model", "model", "symlink.safetensors"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: modelFolder), ["model.safetensors"])

        // A sibling of the input is fine.
        try writeComplete(modelFolder + "/other.safetensors", inputs: inputs)
        XCTAssertEqual(read(input), original)
    }

    func testModelFolderInputsCoverEveryFile() throws {
        let sample = Fixtures.sample("sharded_llama")
        let inputs = try Checkpoint(path: sample).filePaths
        let folder = TemporaryDirectory()
        // The index and config.json of an input folder are inputs too.
        XCTAssertTrue(inputs.contains(sample + "/model.safetensors.index.json"))
        XCTAssertTrue(inputs.contains(sample + "/config.json"))
        assertUsageError(try self.makeWriter(sample + "/config.json", overwrite: true, inputs: inputs), containing: "refusing to write over an input")
        assertUsageError(try self.makeWriter(sample, folder: true, overwrite: true, inputs: inputs), containing: "refusing to write over an input")
        XCTAssertEqual(folder.contents(), [])
    }
}
