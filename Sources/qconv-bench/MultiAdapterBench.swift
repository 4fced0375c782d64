import Glibc
import QConvKit

/// The peer of `qconv merge-lora BASE A1 A2 A3 OUT --method M --weights ...`:
/// PEFT's `add_weighted_adapter` then `merge_and_unload()` on the CPU, the
/// merged model saved with `save_pretrained`. Passed to Python with `-c`.
/// usage: python -c SCRIPT BASE OUT METHOD WEIGHTS ADAPTER...
let peftWeightedMergeScript = """
import sys
from transformers import AutoModelForCausalLM
from peft import PeftModel
base, out, method, weights, adapters = sys.argv[1], sys.argv[2], sys.argv[3], [float(w) for w in sys.argv[4].split(",")], sys.argv[5:]
names = ["a%d" % i for i in range(len(adapters))]
m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, torch_dtype="auto"), adapters[0], adapter_name=names[0])
for name, path in zip(names[1:], adapters[1:]):
    m.load_adapter(path, adapter_name=name)
m.add_weighted_adapter(names, weights, "merged", combination_type=method)
m.set_adapter("merged")
m.merge_and_unload(adapter_names=["merged"]).save_pretrained(out)
"""

/// Three r=16 adapters on every linear layer merged into the model by qconv
/// (`cat`, exact, and `svd` to rank 16 through QR) and, with the peers, by
/// PEFT's `svd` (full `[out, in]` SVDs), in the same run.
func runMultiAdapterMerges(settings: Settings, model: SyntheticModel, base: String, firstAdapter: String, work: String, threads: [String]) throws {
    var adapters = [firstAdapter]
    for seed: UInt64 in [2, 3] {
        let path = work + "/adapter\(seed)"
        if FileSystem.kind(of: path + "/adapter_model.safetensors") != .file {
            log("writing \(path)")
            try model.writeAdapter(to: path, rank: 16, seed: seed)
        }
        adapters.append(path)
    }
    let weights = "0.5,0.3,0.2", out = work + "/merged3"
    let copySource = base + "/model.safetensors", mb100: UInt64 = 100_000_000
    var rows: [Row] = []
    for method in ["cat", "svd"] {
        rows.append(timeAgainstCopy("qconv merge-lora, 3 adapters, \(method)",
                                    [settings.qconv, "merge-lora", base] + adapters + [out, "--method", method, "--weights", weights, "--quiet"] + threads,
                                    output: out, copySource: copySource, runs: settings.runs, targetRatio: 2.0, targetRSS: mb100))
    }
    FileSystem.removeItem(out)
    printTable(rows, title: "Several adapters: qconv against cp", judged: !settings.quick)
    guard settings.usePeers ?? !settings.quick else { return }
    guard Runner.measure([settings.python, "-c", "import torch, peft, transformers"]).status == 0 else {
        print("\nPEFT skipped: \(settings.python) lacks torch/peft/transformers.")
        return
    }
    print("\n| job | peer time | peer peak RSS | qconv time | qconv peak RSS | qconv speed-up | memory ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (method, row) in [("svd", rows[1])] {
        log("peer: PEFT add_weighted_adapter \(method)")
        var times: [Double] = [], peak: UInt64 = 0, failed = false
        for _ in 0..<settings.runs {
            FileSystem.removeItem(work + "/peer-merged3")
            settle()
            let measured = Runner.measure([settings.python, "-c", peftWeightedMergeScript, base, work + "/peer-merged3", method, weights] + adapters)
            failed = failed || measured.status != 0
            times.append(measured.seconds)
            peak = max(peak, measured.peakRSSBytes)
            log("  PEFT \(method): \(fixed(measured.seconds, 2)) s, peak RSS \(megabytes(measured.peakRSSBytes))")
        }
        FileSystem.removeItem(work + "/peer-merged3")
        let time = median(times)
        print("| PEFT add_weighted_adapter \(method), 3 adapters\(failed ? " (failed)" : "") | \(fixed(time, 2)) s | \(megabytes(peak)) | \(fixed(row.seconds, 2)) s | \(megabytes(row.peakRSS)) | \(fixed(time / row.seconds, 1))× | \(fixed(Double(peak) / Double(max(row.peakRSS, 1)), 1))× |")
    }
}
