// Runs on the audio thread: hands each 128-sample block of input 0 (speak) and input 1
// (listen, optional) to the page, which packs them into 20 ms PCM16 frames. A missing input
// is silence, so the speak clock keeps ticking when a file ends (the avatar listens).
class Capture extends AudioWorkletProcessor {
  process(inputs) {
    const n = 128;
    const pick = (i) => (inputs[i] && inputs[i][0] && inputs[i][0].length) ? inputs[i][0].slice() : new Float32Array(n);
    this.port.postMessage({ speak: pick(0), listen: pick(1) });
    return true;
  }
}
registerProcessor("capture", Capture);
