import Foundation
import QConvTestSupport
import XCTest

/// Input of the wrong kind: every command says what it was given and what
/// it expects (exit 3), or that the arguments look swapped (exit 2).
final class WrongInputCLITests: XCTestCase {
    let sample = Fixtures.sample("sharded_llama")

    func testOtherFormatsAreNamedByEveryCommand() throws {
        let directory = TemporaryDirectory()
        let files: [(name: String, bytes: [UInt8], what: String)] = [
            ("model.gguf", Array("GGUF".utf8) + [3, 0, 0, 0] + [UInt8](repeating: 0, count: 24), "this is a GGUF file (llama.cpp), which qconv does not read"),
            // A zip signature is a PyTorch checkpoint's: one cut short is named as such (issue 13).
            ("pytorch_model.bin", [0x50, 0x4B, 0x03, 0x04] + [UInt8](repeating: 0, count: 60), "a zip archive without its end record"),
            ("old.pt", [0x80, 0x02, 0x7D, 0x71, 0x00] + [UInt8](repeating: 0x2E, count: 20), "this is a Python pickle (a legacy PyTorch checkpoint)"),
        ]
        for file in files {
            let path = directory.file(file.name)
            writeFile(path, file.bytes)
            for arguments in [["inspect", path], ["to-nf4", path, directory.file("o.qc")], ["dequant", path, directory.file("o")],
                              ["verify", path], ["verify", sample, path], ["merge-lora", path, Fixtures.sample("lora_llama_basic/adapter"), "--dry-run"]] {
                let result = try runQConv(arguments)
                XCTAssertEqual(result.status, 3, "\(arguments): \(result.stderr)")
                XCTAssertTrue(result.stderr.hasPrefix("qconv: error: \(path): \(file.what)"), "\(arguments): \(result.stderr)")
            }
        }
        XCTAssertEqual(Set(directory.contents()), Set(files.map(\.name)), "nothing written")
    }

    func testAContainerWhereASourceIsExpectedAndTheReverse() throws {
        let directory = TemporaryDirectory()
        XCTAssertEqual(try runQConv(["to-nf4", sample, directory.file("m.qc"), "--quiet"]).status, 0)
        let again = try runQConv(["to-int8", directory.file("m.qc"), directory.file("again.qc")])
        XCTAssertEqual(again.status, 3)
        XCTAssertTrue(again.stderr.contains("tensor 'model.layers.0.self_attn.k_proj.weight' is stored as nf4") && again.stderr.contains("dequantize it"), again.stderr)
        let dequant = try runQConv(["dequant", sample, directory.file("out")])
        XCTAssertEqual(dequant.status, 3)
        XCTAssertEqual(dequant.stderr, "qconv: error: \(sample): this is a safetensors-sharded-folder model; "
                       + "dequant turns a quantized model (a qconv container, a bitsandbytes checkpoint) back into safetensors\n")
        let swapped = try runQConv(["verify", directory.file("m.qc"), sample])
        XCTAssertEqual(swapped.status, 2)
        XCTAssertTrue(swapped.stderr.contains("the arguments look swapped"), swapped.stderr)
        XCTAssertEqual(Set(directory.contents()), ["m.qc"])
    }

    func testOneArgumentVerifyChecksAnyModel() throws {
        let ok = try runQConv(["verify", sample])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertEqual(ok.stdout, "\(sample): ok: 21 tensors in 11 files, 1,567,232 bytes of tensor data accounted for (headers, index and sizes consistent)\n")
        let file = try runQConv(["verify", Fixtures.sample("lora_llama_basic/base/model.safetensors"), "--json"])
        XCTAssertEqual(file.status, 0, file.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(file.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(report["ok"] as? Bool, true)
        XCTAssertEqual(report["format"] as? String, "safetensors")
        // A shard the index names is gone: exit 3, naming it.
        let directory = TemporaryDirectory()
        try FileManager.default.copyItem(atPath: sample, toPath: directory.file("model"))
        try FileManager.default.removeItem(atPath: directory.file("model/model-00003-of-00011.safetensors"))
        let broken = try runQConv(["verify", directory.file("model")])
        XCTAssertEqual(broken.status, 3)
        XCTAssertTrue(broken.stderr.contains("shard 'model-00003-of-00011.safetensors' is listed in the index but missing"), broken.stderr)
    }
}
