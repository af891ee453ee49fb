// One reconnecting websocket reader for every numbered event stream (ping jobs, training runs).
// It remembers the last sequence number it handled and reconnects with ?after=<seq>, so the
// server replays exactly the missing events: no gaps, no duplicates, whatever the network does.
function openEventStream(path, { onEvent, onEnd, onStatus } = {}) {
  let lastSeq = 0;
  let ended = false;
  let retry = 500;
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";

  function connect() {
    const socket = new WebSocket(`${scheme}://${window.location.host}${path}?after=${lastSeq}`);
    socket.onopen = () => { retry = 500; onStatus && onStatus("connected"); };
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.type === "end") { ended = true; onEnd && onEnd(event); socket.close(); return; }
      if (event.seq <= lastSeq) return; // already handled
      lastSeq = event.seq;
      onEvent && onEvent(event);
    };
    socket.onclose = (closeEvent) => {
      if (ended) return;
      // 4403: the server refused this stream (not yours, or signed out): retrying cannot help.
      if (closeEvent.code === 4403) { onStatus && onStatus("forbidden"); return; }
      onStatus && onStatus("reconnecting");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }
  connect();
  return { get lastSeq() { return lastSeq; } };
}
window.openEventStream = openEventStream;
