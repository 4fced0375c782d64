import Dispatch
import Glibc
@testable import QConvKit
import QConvTestSupport
import XCTest

/// The list of temporary outputs that an interrupted run removes: a signal
/// arriving at any moment finds every temporary output that exists in it.
/// (Each test uses its own registry: `TemporaryOutputs.removeAll()` on the
/// shared one would stop this process from writing outputs.)
final class TemporaryOutputsTests: XCTestCase {
    private func createFile(_ registry: TemporaryOutputs.Registry, _ path: String) -> TemporaryOutputs.Registry.Creation {
        registry.create(path, isDirectory: false) {
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard fd >= 0 else { return false }
            close(fd)
            return true
        }
    }

    func testAFailedCreationUnlistsExactlyItsPath() {
        let folder = TemporaryDirectory("qconv-temporaries")
        let registry = TemporaryOutputs.Registry()
        let first = folder.file(".m.qconv-tmp-7-1"), tenth = folder.file(".m.qconv-tmp-7-10")
        XCTAssertEqual(createFile(registry, tenth), .created)
        XCTAssertEqual(createFile(registry, first), .created)
        registry.register(first + "/inside", isDirectory: false)
        // The name is taken now: the second try fails, and only its own entry goes.
        XCTAssertEqual(createFile(registry, tenth), .failed(.fileExists))
        XCTAssertEqual(registry.paths, [first + "/inside", first, tenth])
        // Unlisting a temporary output unlists what is inside it, not a longer name.
        registry.unregister(first)
        XCTAssertEqual(registry.paths, [tenth])
    }

    func testRemoveAllRemovesEverythingAndNothingIsCreatedAfter() {
        let folder = TemporaryDirectory("qconv-temporaries")
        let registry = TemporaryOutputs.Registry()
        let output = folder.file(".out.qconv-tmp-7-0")
        XCTAssertEqual(registry.create(output, isDirectory: true) { mkdir(output, 0o755) == 0 }, .created)
        XCTAssertEqual(createFile(registry, output + "/model.safetensors"), .created)
        XCTAssertEqual(createFile(registry, folder.file(".one.qconv-tmp-7-0")), .created)
        registry.removeAll()
        XCTAssertEqual(folder.contents(), [])
        XCTAssertEqual(registry.paths, [])
        XCTAssertEqual(createFile(registry, folder.file(".two.qconv-tmp-7-0")), .stopping)
        XCTAssertEqual(folder.contents(), [], "a creation after removeAll() went ahead")
    }

    /// One thread creates temporary files as fast as it can while another
    /// removes them all at a random moment, as the signal thread of qconv
    /// does: nothing may be left, whenever the removal comes (a file created
    /// but not yet listed, or created after the removal, would stay).
    func testNoMomentOfARemovalLeavesAFileBehind() {
        let folder = TemporaryDirectory("qconv-temporaries")
        var rng = SplitMix64(seed: 17)
        for trial in 0..<200 {
            let registry = TemporaryOutputs.Registry()
            let done = DispatchSemaphore(value: 0)
            let prefix = folder.file(".t\(trial).qconv-tmp-7-")
            Thread.detachNewThread { [self] in
                var attempt = 0
                while createFile(registry, prefix + "\(attempt)") == .created { attempt += 1 }
                done.signal()
            }
            usleep(useconds_t(Int.random(in: 0...400, using: &rng)))
            registry.removeAll()
            done.wait()
            XCTAssertEqual(folder.contents(), [], "trial \(trial): a temporary file was left behind")
            if !folder.contents().isEmpty { return }
        }
    }
}
