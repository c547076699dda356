// A WebSocket channel that reconnects (with backoff) and hands each JSON event to a handler.

export function live(path, onEvent, { onState = () => {} } = {}) {
  let socket = null;
  let delay = 500;
  let closed = false;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
  function connect() {
    socket = new WebSocket(url);
    socket.addEventListener("open", () => {
      delay = 500;
      onState("open");
    });
    socket.addEventListener("message", (e) => {
      try {
        onEvent(JSON.parse(e.data));
      } catch (err) {
        console.error("bad live frame", err);
      }
    });
    socket.addEventListener("close", (e) => {
      onState("closed", e.code);
      if (closed || e.code === 4401 || e.code === 4403) return;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    });
  }
  connect();
  return {
    close() {
      closed = true;
      socket && socket.close();
    },
  };
}
