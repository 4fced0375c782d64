import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// A full disk, on a small tmpfs (root only): exit 4, one line naming the
/// destination the user gave (never a temporary path), nothing left behind.
final class DiskFullCLITests: XCTestCase {
    private let sample = Fixtures.sample("sharded_llama")
    private let base = Fixtures.sample("lora_llama_basic/base")
    private let adapter = Fixtures.sample("lora_llama_basic/adapter")

    func testAFullDiskNamesTheDestinationAndLeavesNothing() throws {
        let directory = TemporaryDirectory()
        let container = directory.file("model.qc")
        XCTAssertEqual(try runQConv(["to-nf4", sample, container, "--quiet"]).status, 0)
        // 1.5 MB dequantized, 450 kB quantized, 490 kB merged: none fits in 300 kB.
        let disk = try SmallTmpfs(at: directory.file("full"), kilobytes: 300)
        let cases: [(arguments: [String], named: String)] = [
            (["dequant", container, disk.path + "/deq"], disk.path + "/deq/model.safetensors"),
            (["dequant", container, disk.path + "/deq", "--max-shard-size", "100KB"], disk.path + "/deq/model-0000"),
            (["dequant", container, disk.path + "/deq.safetensors"], disk.path + "/deq.safetensors"),
            (["to-nf4", sample, disk.path + "/nf4.qc"], disk.path + "/nf4.qc"),
            (["merge-lora", base, adapter, disk.path + "/merged"], disk.path + "/merged/model.safetensors"),
            (["merge-lora", base + "/model.safetensors", adapter, disk.path + "/merged.safetensors"], disk.path + "/merged.safetensors"),
        ]
        for (arguments, named) in cases {
            let result = try runQConv(arguments)
            let command = arguments.joined(separator: " ")
            XCTAssertEqual(result.status, 4, "\(command): \(result.stderr)")
            // The shard that fills the disk depends on the file system's block size.
            XCTAssertTrue(result.stderr.hasPrefix("qconv: error: \(named)"), result.stderr)
            XCTAssertTrue(result.stderr.hasSuffix(": cannot write: No space left on device\n"), result.stderr)
            XCTAssertFalse(result.stderr.contains("qconv-tmp"), result.stderr)
            XCTAssertEqual(disk.contents(), [], command)
        }
    }
}

/// A tmpfs of a given size mounted on a fresh folder, unmounted on deinit.
/// Mounting needs root (and a system that allows it): the test is skipped otherwise.
final class SmallTmpfs {
    let path: String

    init(at path: String, kilobytes: Int) throws {
        guard getuid() == 0 else { throw XCTSkip("a full disk is simulated with a small tmpfs, which only root can mount") }
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=\(kilobytes)k", "tmpfs", path]
        mount.standardError = FileHandle.nullDevice
        try mount.run()
        mount.waitUntilExit()
        guard mount.terminationStatus == 0 else { throw XCTSkip("cannot mount a tmpfs here (mount exited with \(mount.terminationStatus))") }
        self.path = path
    }

    deinit {
        let umount = Process()
        umount.executableURL = URL(fileURLWithPath: "/bin/umount")
        umount.arguments = [path]
        try? umount.run()
        umount.waitUntilExit()
    }

    /// Names in the tmpfs, hidden ones included.
    func contents() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }
}
